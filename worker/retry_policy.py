"""What is retried, and when: the one place that decides, for every retried thing.

- A callback attempt: its outcome from the answer (SPEC, Status callback), then the next delay.
- A task that met a transient database error (shared.platform.db.TRANSIENT_ERRORS), compute or
  delivery: a short backoff, a bounded number of times.

One backoff for all of them, a pure function with jitter: no clock, no randomness of its own, so
the tests need no sleeping.
"""

from __future__ import annotations

import datetime as dt
import enum
import random
from email.utils import parsedate_to_datetime


class Outcome(str, enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # worth another attempt, if any are left
    FINAL = "failed"  # will not get better by asking again


def classify(status_code: int | None) -> Outcome:
    """A response's outcome; None stands for no response (connection error or timeout)."""
    if status_code is None:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code in (408, 429) or status_code >= 500:
        return Outcome.RETRY
    return Outcome.FINAL  # other 3xx (redirects are not followed) and 4xx


def backoff_s(attempt: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The delay after the attempt-th attempt (1-based): initial * 2^(attempt-1), capped, with
    "equal jitter" (half fixed, half random) so that receivers that failed together are not retried
    together, while the schedule stays close to the configured one."""
    ceiling = min(max_s, initial_s * 2 ** min(attempt - 1, 62))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# A task that cannot reach the database waits 1, 2, 4 ... 60 s (jittered), this many times, then gives
# up: a summary fails with the reason, a delivery is left pending for the sweeper to send when due.
TRANSIENT_INITIAL_S, TRANSIENT_MAX_S = 1.0, 60.0
MAX_TRANSIENT_RETRIES = 8


def transient_delay_s(retries: int, rng: random.Random | None = None) -> float:
    """The delay before retry number retries + 1 of a task that met a transient database error."""
    return backoff_s(retries + 1, TRANSIENT_INITIAL_S, TRANSIENT_MAX_S, rng)


def retry_after_s(header: str | None, now: dt.datetime) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable
    (a receiver's header is anything: `²` is a digit to str.isdigit, a year can overflow)."""
    if not header:
        return None
    header = header.strip()
    if header.isascii() and header.isdigit():
        return float(header[:12])  # beyond 10^12 s it is "never" anyway; the cap bounds it
    try:
        when = parsedate_to_datetime(header)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def next_delay_s(attempt: int, retry_after: float | None, initial_s: float, max_s: float,
                 rng: random.Random | None = None) -> float:
    """Our backoff, or the receiver's Retry-After when it asks for longer; never above the cap."""
    delay = backoff_s(attempt, initial_s, max_s, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, max_s)
