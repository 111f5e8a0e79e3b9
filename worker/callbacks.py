"""callbacks.deliver: one attempt at a summary's StatusCallback, recorded, then retried or settled.

The delivery row in PostgreSQL is the state (pending, delivered, failed; the next attempt's time),
written only through shared.callbacks.deliveries; the message only says "try now". A claim with a
lease makes two messages for one delivery harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
import urllib3
from celery import Task

from shared.callbacks import deliveries
from shared.callbacks import url as callback_url
from shared.callbacks.deliveries import Claimed
from shared.callbacks.state import DeliveryState
from shared.callbacks.url import request_target
from shared.platform import logs, metrics
from shared.platform.config import Settings, get_settings
from shared.platform.db import TRANSIENT_ERRORS, get_sessionmaker
from shared.platform.queue import DELIVER_CALLBACK, clear_callback_in_flight, get_redis
from shared.safe_text import safe
from shared.signing import signature
from worker.celery_app import app
from worker.circuit import CircuitBreaker, Slots
from worker.retry_policy import MAX_TRANSIENT_RETRIES, Outcome, classify, next_delay_s, retry_after_s, transient_delay_s
from worker.ssrf import Deadline, ForbiddenAddress, guarded_session, is_forbidden, resolve

log = logging.getLogger(__name__)

USER_AGENT = "CallFeedbackSummaries-Callback/1.0"
EXCERPT_BYTES = 1024
LEASE_MARGIN_S = 30  # a delivery's lease outlives its attempt's deadline by this much
BUSY_RETRY_S = (0.5, 1.5)  # how soon to look again when a destination or the account has no free slot


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
    session = guarded_session(settings.callback_allowed_networks)
    deadline = Deadline(settings.callback_attempt_deadline_s)
    response = None
    try:
        with deadline:
            timeout = (min(settings.callback_connect_timeout_s, deadline.remaining_s()),
                       min(settings.callback_read_timeout_s, deadline.remaining_s()))
            response = session.send(prepared, allow_redirects=False, stream=True, timeout=timeout)
            body = response.raw.read(EXCERPT_BYTES, decode_content=True)
    except ForbiddenAddress as refused:
        return AttemptResult(None, safe(refused), elapsed_ms(), None, None, final=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
        reason = (f"deadline of {settings.callback_attempt_deadline_s:g}s exceeded" if deadline.expired
                  else f"{type(error).__name__}: {error}")
        return AttemptResult(None, safe(reason)[:500], elapsed_ms(), None, None)
    finally:
        if response is not None:
            response.close()
        session.close()
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
    with get_sessionmaker()() as session:
        recorded = deliveries.settle(session, delivery, target, attempt, error, delay_s)
        session.commit()
    if not recorded:
        return
    metrics.CALLBACK_ATTEMPTS.labels(outcome.value).inc()
    metrics.CALLBACK_LATENCY.observe(result.latency_ms / 1000)
    if outcome is Outcome.DELIVERED:
        metrics.CALLBACK_DELIVERY.observe((dt.datetime.now(dt.timezone.utc) - delivery.date_created).total_seconds())
    log.info("callback attempt %d: %s", number, outcome.value,
             extra={"status_code": result.status_code, "latency_ms": result.latency_ms})


def _postpone(summary_sid: str, delay_s: float) -> None:
    with get_sessionmaker()() as session:
        deliveries.postpone(session, summary_sid, delay_s)
        session.commit()


@app.task(name=DELIVER_CALLBACK, bind=True, acks_late=True, ignore_result=True)
def deliver_callback(self: Task, summary_sid: str) -> None:
    with logs.bind(summary_sid=summary_sid, task_id=self.request.id):
        try:
            _deliver(summary_sid)
        except TRANSIENT_ERRORS as exc:
            if self.request.retries >= MAX_TRANSIENT_RETRIES:
                # Still pending in PostgreSQL: the sweeper sends it again once it is due.
                log.warning("database unavailable after %d retries; left to the sweeper", self.request.retries)
                return
            countdown = transient_delay_s(self.request.retries)
            log.warning("transient database error; retrying in %.1fs", countdown)
            raise self.retry(exc=exc, countdown=countdown)


def _unsent(delivery: Claimed, error: str, final: bool, settings: Settings) -> None:
    """An attempt that ended before any request: it counts, and is recorded like any other."""
    _settle(delivery, AttemptResult(None, safe(error)[:500], 0, None, None, final=final), settings)


def _deliver(summary_sid: str) -> None:
    settings = get_settings()
    with get_sessionmaker()() as session:
        delivery = deliveries.claim(session, summary_sid, lease_s(settings))
        session.commit()
    clear_callback_in_flight(summary_sid)
    if delivery is None:
        return  # delivered, failed, dropped, not yet due, or being attempted by another worker
    unusable = callback_url.problem(delivery.url.split("#", 1)[0])
    if unusable:  # stored before URLs were checked at create; asking again will not help
        _unsent(delivery, f"unusable URL: {unusable}", True, settings)
        return
    parts = urlsplit(delivery.url)
    try:
        address = resolve(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    except (OSError, ValueError, UnicodeError) as error:
        _unsent(delivery, f"could not resolve {parts.hostname}: {error}", False, settings)
        return
    if is_forbidden(address, settings.callback_allowed_networks):
        _unsent(delivery, f"refused: {parts.hostname} is {address}, a non-public address", True, settings)
        return
    destination = f"{delivery.account_sid}:{address}"
    breaker = CircuitBreaker(get_redis(), settings.callback_circuit_threshold, settings.callback_circuit_cooldown_s,
                             lease_s(settings))
    wait_s = breaker.wait_s(destination)
    if wait_s > 0:
        log.info("circuit open for %s; waiting %.1fs", address, wait_s)
        _postpone(summary_sid, wait_s)
        return
    slots = Slots(get_redis(), lease_s(settings))
    token = f"{summary_sid}:{uuid.uuid4().hex}"
    limits = {f"destination:{address}": settings.callback_max_in_flight_per_host,
              f"account:{delivery.account_sid}": settings.callback_max_in_flight_per_account}
    full = slots.acquire(token, limits)
    if full is not None:
        # Every slot of the destination or of the account is taken; the circuit's probe, if this was
        # it, expires with its lease.
        _postpone(summary_sid, random.uniform(*BUSY_RETRY_S))
        return
    try:
        result = send(delivery, delivery.auth_token, settings)
    finally:
        slots.release(token, list(limits))
    if not result.final:
        if result.outcome is Outcome.RETRY:
            breaker.record_failure(destination)
        else:
            breaker.record_success(destination)
    _settle(delivery, result, settings)
