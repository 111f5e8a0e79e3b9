"""While Redis does not answer, nothing waits for it where its absence is already allowed for.

Some Redis calls may fail without harm: a message the sweeper sends again, a rate limit that fails
open, an in-flight marker that expires anyway. Each still waited out ENQUEUE_TIMEOUT_S, and redis-py
retries a refused connection for about as long, so while Redis was down every create waited twice
(the limit, then the message: 4 s by default), holding its database connection, until the pool ran
dry and the API that is meant to keep accepting summaries answered 503. Once such calls fail for
want of Redis (twice in a row), the process skips them for PAUSE_S; then one call at a time tries
again, and the first that Redis answers ends the outage. Calls that cannot do their job without
Redis (the sweeper's look for in-flight markers, a callbacks worker's admission) are not guarded:
they fail as before.

Not pybreaker: its breaker holds one lock across the guarded call, so every Redis call of a process
would wait for the one before it (danielfm/pybreaker#55); circuitbreaker has no lock at all
(fabfuel/circuitbreaker#61). This is one timestamp under a lock never held across I/O.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import kombu.exceptions
import redis.exceptions

from shared.errors import RedisDown

log = logging.getLogger(__name__)

PAUSE_S = 5.0
# Failed calls in a row that make an outage: not one read timeout in a blip (which would lift every
# account's create limit for the pause), but no more than a second create waiting for a dead Redis.
FAILURES_TO_OPEN = 2
# Redis absent, unreachable, still loading, or no master known to the sentinels; not a refused
# command (a script error says nothing about Redis being there).
OUTAGE_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError,
                 socket.timeout, ConnectionError)

T = TypeVar("T")


class OutageLatch:
    def __init__(self, pause_s: float = PAUSE_S, failures: int = FAILURES_TO_OPEN, clock: Callable[[], float] = time.monotonic):
        self.pause_s, self.failures, self._clock = pause_s, failures, clock
        self._lock = threading.Lock()
        self._failed_in_a_row = 0
        self._down_until: float | None = None  # None: no outage
        self._probing = False

    @property
    def down(self) -> bool:
        return self._down_until is not None

    def call(self, function: Callable[..., T], *args, **kwargs) -> T:
        """function(*args, **kwargs), or RedisDown without calling it during an outage's pause (and,
        after it, while another call is trying Redis again)."""
        with self._lock:
            probe = self._down_until is not None
            if probe and (self._clock() < self._down_until or self._probing):
                raise RedisDown()
            self._probing = self._probing or probe
        answered = False
        try:
            result = function(*args, **kwargs)
            answered = True
        except OUTAGE_ERRORS:
            self._failed()
            raise
        except Exception:
            answered = True  # an answer, if not the one wanted: Redis is there
            raise
        finally:
            # Whatever ended the call (a killed greenlet, a timeout of the caller's: no word on Redis
            # either way), the next one may probe.
            if probe:
                self._probing = False
            if answered:
                self._answered()
        return result

    def reset(self) -> None:
        """Forget an outage without a call to end it (a test's, whose Redis was never the real one)."""
        with self._lock:
            self._failed_in_a_row, self._down_until, self._probing = 0, None, False

    def _failed(self) -> None:
        with self._lock:
            self._failed_in_a_row += 1
            opened = self._down_until is None and self._failed_in_a_row >= self.failures
            if opened or self._down_until is not None:
                self._down_until = self._clock() + self.pause_s
        if opened:
            log.warning("Redis does not answer: sends, rate limits and markers skipped for %gs at a time; "
                        "the sweeper sends what was not sent", self.pause_s)

    def _answered(self) -> None:
        with self._lock:
            ended = self._down_until is not None
            self._failed_in_a_row, self._down_until = 0, None
        if ended:
            log.warning("Redis answers again")


# One per process: the broker and the project's own client reach the same Redis.
LATCH = OutageLatch()
