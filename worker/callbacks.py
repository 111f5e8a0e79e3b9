"""callbacks.deliver: one attempt at a summary's StatusCallback, recorded, then retried or settled.

The delivery row in PostgreSQL is the state (pending, delivered, failed; the next attempt's time),
written only through shared.callbacks.deliveries; the message only says "try now". A claim with a
lease makes two messages for one delivery harmless.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
import requests
import urllib3

from shared.callbacks import deliveries
from shared.callbacks import url as callback_url
from shared.callbacks.circuit import Admission, CircuitBreaker, Slots
from shared.callbacks.deliveries import Claimed
from shared.callbacks.state import DeliveryState
from shared.callbacks.url import request_target
from shared.errors import ForbiddenAddress
from shared.platform import metrics
from shared.platform.config import Settings, get_settings
from shared.platform.db import autocommit
from shared.platform.queue import CALLBACK_IN_FLIGHT_KEY, DELIVER_CALLBACK, clear_callback_in_flight, get_redis
from shared.safe_text import safe
from shared.signing import signature
from worker import ssrf
from worker.celery_app import app
from worker.retry_policy import Outcome, classify, next_delay_s, retry_after_s
from worker.ssrf import Deadline, is_forbidden, resolve
from worker.tasks import Task

log = logging.getLogger(__name__)

USER_AGENT = "CallFeedbackSummaries-Callback/1.0"
EXCERPT_BYTES = 1024
LEASE_MARGIN_S = 30  # a delivery's lease outlives its attempt's deadline by this much
# How soon to look again when a destination or the family has no free slot: soon at first, then
# later each time it is still full (the upper bound doubles, to BUSY_MAX_S), counted per delivery
# in Redis for BUSY_MEMORY_S. At a fixed 0.5 to 1.5 s, 490 deliveries waiting on one family's share
# cost 560 updates a second and 80 % of a callbacks worker, and every other tenant waited for it.
BUSY_RETRY_S, BUSY_MAX_S, BUSY_MEMORY_S = (0.5, 1.5), 30.0, 120
BUSY_KEY = "cfs:busy:{sid}"


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    latency_ms: int
    excerpt: str | None
    retry_after: str | None
    final: bool = False  # refused before sending (a forbidden address, a URL no sender can use)

    @property
    def outcome(self) -> Outcome:
        return Outcome.FINAL if self.final else classify(self.status_code)


def lease_s(settings: Settings) -> float:
    """A claim always outlives the attempt it covers: never two attempts of one delivery in flight."""
    return settings.callback_attempt_deadline_s + LEASE_MARGIN_S


def _prepare(delivery: Claimed, auth_token: str) -> requests.PreparedRequest:
    url, form = request_target(delivery.url, delivery.method, delivery.params)
    prepared = requests.Request(delivery.method, url, data=form, headers={
        "User-Agent": USER_AGENT,
        "I-Twilio-Idempotency-Token": delivery.idempotency_token,
    }).prepare()
    # Signed over the URL exactly as it goes on the wire, after requests has normalised it.
    prepared.headers["X-Twilio-Signature"] = signature(auth_token, prepared.url, form)
    if isinstance(prepared.body, str):
        # As bytes, http.client sends headers and body in one segment; as str, in two, and Nagle's
        # algorithm with the receiver's delayed ACK then stalls every POST for 40 ms.
        prepared.body = prepared.body.encode("utf-8")
    return prepared


def send(delivery: Claimed, auth_token: str, settings: Settings) -> AttemptResult:
    """One HTTP request, signed, within CALLBACK_ATTEMPT_DEADLINE_S all told; redirects not followed,
    at most a kilobyte of the answer read. Whatever goes wrong ends as a result, never an exception."""
    started = time.monotonic()
    elapsed_ms = lambda: int((time.monotonic() - started) * 1000)  # noqa: E731
    try:
        prepared = _prepare(delivery, auth_token)
    except (requests.RequestException, ValueError, UnicodeError) as error:
        # Stored before URLs were checked at create: it will not become usable by asking again.
        return AttemptResult(None, safe(f"unusable URL: {error}")[:500], elapsed_ms(), None, None, final=True)
    deadline = Deadline(settings.callback_attempt_deadline_s)
    response = None
    try:
        with deadline:
            timeout = (min(settings.callback_connect_timeout_s, deadline.remaining_s()),
                       min(settings.callback_read_timeout_s, deadline.remaining_s()))
            response = ssrf.send(prepared, settings.callback_allowed_networks, timeout)
            body = response.raw.read(EXCERPT_BYTES, decode_content=True)
    except ForbiddenAddress as refused:
        return AttemptResult(None, safe(refused), elapsed_ms(), None, None, final=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        reason = (f"deadline of {settings.callback_attempt_deadline_s:g}s exceeded" if deadline.expired
                  else f"{type(error).__name__}: {error}")
        return AttemptResult(None, safe(reason)[:500], elapsed_ms(), None, None)
    finally:
        if response is not None:
            response.close()  # the connection stays open for this thread's next attempt if it can
    if deadline.expired:  # the answer was cut short at the deadline: not an answer
        return AttemptResult(None, f"deadline of {settings.callback_attempt_deadline_s:g}s exceeded", elapsed_ms(),
                             None, None)
    # Stored escaped: a NUL or a terminal escape from a receiver must neither fail the record nor
    # reach an operator's terminal.
    return AttemptResult(response.status_code, None, elapsed_ms(), safe(body.decode("utf-8", "replace")),
                         response.headers.get("Retry-After"))


def _settle(delivery: Claimed, result: AttemptResult, settings: Settings) -> None:
    """Record the attempt and the delivery's new state; a retry is scheduled by the same commit."""
    number = delivery.attempts + 1
    outcome = result.outcome
    delay_s = None
    if outcome is Outcome.RETRY and number < delivery.attempt_limit:
        delay_s = next_delay_s(number, retry_after_s(result.retry_after, dt.datetime.now(dt.timezone.utc)),
                               settings.callback_backoff_initial_s, settings.callback_backoff_max_s)
    elif outcome is Outcome.RETRY:
        outcome = Outcome.FINAL
    target = {Outcome.DELIVERED: DeliveryState.DELIVERED, Outcome.FINAL: DeliveryState.FAILED}.get(
        outcome, DeliveryState.PENDING)
    error = result.error or (None if outcome is Outcome.DELIVERED else f"HTTP {result.status_code}")
    attempt = deliveries.Attempt(outcome.value, result.status_code, result.error, result.latency_ms, result.excerpt)
    with autocommit() as connection:
        settled = deliveries.settle(connection, delivery, target, attempt, error, delay_s)
    if settled.retry is not None:
        settled.retry()
    if not settled.recorded:
        return
    metrics.CALLBACK_ATTEMPTS.labels(outcome.value).inc()
    metrics.CALLBACK_LATENCY.observe(result.latency_ms / 1000)
    if outcome is Outcome.DELIVERED:
        metrics.CALLBACK_DELIVERY.observe((dt.datetime.now(dt.timezone.utc) - delivery.date_created).total_seconds())
    log.info("callback attempt %d: %s", number, outcome.value,
             extra={"status_code": result.status_code, "latency_ms": result.latency_ms})


def _postpone(delivery: Claimed, delay_s: float) -> None:
    with autocommit() as connection:
        again = deliveries.postpone(connection, delivery, delay_s)
    again()


# A transient database error is retried by the base (worker/tasks.py); after the last retry the
# delivery is still pending in PostgreSQL, and the sweeper sends it again once it is due.
@app.task(name=DELIVER_CALLBACK, base=Task, bind=True, acks_late=True, ignore_result=True, about_a_summary=True)
def deliver_callback(self: Task, summary_sid: str) -> None:
    _deliver(summary_sid)


def _unsent(delivery: Claimed, error: str, final: bool, settings: Settings) -> None:
    """An attempt that ended before any request: it counts, and is recorded like any other."""
    _settle(delivery, AttemptResult(None, safe(error)[:500], 0, None, None, final=final), settings)


# A pure function of the URL, and about a tenth of an attempt's own CPU uncached: a busy
# receiver's URL is checked once per worker, not once per callback.
_url_problem = functools.lru_cache(maxsize=4096)(callback_url.problem)


def busy_delay_s(client: redis.Redis, summary_sid: str) -> float:
    """The wait before this delivery looks for a slot again, the n-th time in a row it found none."""
    key = BUSY_KEY.format(sid=summary_sid)
    try:
        with client.pipeline() as pipe:
            times, _ = pipe.incr(key).expire(key, BUSY_MEMORY_S).execute()
    except redis.RedisError:  # as the first time: the admission itself just worked, so this is a blip
        times = 1
    low, high = BUSY_RETRY_S
    return random.uniform(low, min(BUSY_MAX_S, high * 2 ** min(int(times) - 1, 16)))


@functools.cache
def _admission(client: redis.Redis, threshold: int, cooldown_s: float, lease: float) -> Admission:
    return Admission(CircuitBreaker(client, threshold, cooldown_s, lease), Slots(client, lease))


def _deliver(summary_sid: str) -> None:
    settings = get_settings()
    with autocommit() as connection:
        delivery = deliveries.claim(connection, summary_sid, lease_s(settings))
    if delivery is None:
        clear_callback_in_flight(summary_sid)
        return  # delivered, failed, dropped, not yet due, or being attempted by another worker
    unusable = _url_problem(delivery.url.split("#", 1)[0])
    if unusable:  # stored before URLs were checked at create; asking again will not help
        clear_callback_in_flight(summary_sid)
        _unsent(delivery, f"unusable URL: {unusable}", True, settings)
        return
    parts = urlsplit(delivery.url)
    try:
        address = resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, ValueError, UnicodeError) as error:
        clear_callback_in_flight(summary_sid)
        _unsent(delivery, f"could not resolve {parts.hostname}: {error}", False, settings)
        return
    if is_forbidden(address, settings.callback_allowed_networks):
        clear_callback_in_flight(summary_sid)
        _unsent(delivery, f"refused: {parts.hostname} is {address}, a non-public address", True, settings)
        return
    destination = f"{delivery.account_sid}:{address}"
    admission = _admission(get_redis(), settings.callback_circuit_threshold, settings.callback_circuit_cooldown_s,
                           lease_s(settings))
    token = f"{summary_sid}:{uuid.uuid4().hex}"
    # Per account family, not per account: a parent with subaccounts (free to create, each a share
    # of its own) took all 64 threads with hanging receivers, and every other tenant's callbacks waited.
    limits = {f"destination:{address}": settings.callback_max_in_flight_per_host,
              f"family:{delivery.family_sid}": settings.callback_max_in_flight_per_account}
    # One round trip: the message's in-flight marker cleared, the circuit asked, the slots taken.
    wait_s, full = admission.admit(CALLBACK_IN_FLIGHT_KEY.format(sid=summary_sid), destination, token, limits)
    if wait_s > 0:
        log.info("circuit open for %s; waiting %.1fs", address, wait_s)
        _postpone(delivery, wait_s)
        return
    if full is not None:
        # Every slot of the destination or of the family is taken: the delivery waits in PostgreSQL,
        # not in a thread; the circuit's probe, if this was it, expires with its lease.
        _postpone(delivery, busy_delay_s(get_redis(), summary_sid))
        return
    outcome = None  # a result refused before sending says nothing about the receiver
    try:
        result = send(delivery, delivery.auth_token, settings)
        if not result.final:
            outcome = "failure" if result.outcome is Outcome.RETRY else "success"
    finally:
        # One round trip: the slots given back (whatever happened) and the outcome counted.
        admission.finish(destination, token, list(limits), outcome)
    _settle(delivery, result, settings)
