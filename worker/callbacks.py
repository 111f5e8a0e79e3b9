"""callbacks.deliver: one attempt at a summary's StatusCallback, recorded, then retried or settled.

The delivery row in PostgreSQL is the state (pending, delivered, failed; the next attempt's time),
written only through shared.callbacks.deliveries; the message only says "try now". A claim with a
lease makes two messages for one delivery harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import requests
from celery import Task

from shared.callbacks import deliveries
from shared.callbacks.deliveries import Claimed
from shared.callbacks.state import DeliveryState
from shared.platform import logs, metrics
from shared.platform.config import Settings, get_settings
from shared.platform.db import TRANSIENT_ERRORS, get_sessionmaker
from shared.platform.queue import DELIVER_CALLBACK, clear_callback_in_flight, get_redis
from worker.celery_app import app
from worker.circuit import CircuitBreaker, HostLimiter
from worker.retry_policy import MAX_TRANSIENT_RETRIES, Outcome, classify, next_delay_s, retry_after_s, transient_delay_s
from shared.signing import request_target, signature
from worker.ssrf import ForbiddenAddress, guarded_session

log = logging.getLogger(__name__)

USER_AGENT = "CallFeedbackSummaries-Callback/1.0"
EXCERPT_BYTES = 1024
BUSY_HOST_RETRY_S = 1.0  # how soon to look again when a host has all its attempt slots in use


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    latency_ms: int
    excerpt: str | None
    retry_after: str | None
    forbidden: bool = False

    @property
    def outcome(self) -> Outcome:
        return Outcome.FINAL if self.forbidden else classify(self.status_code)


def send(delivery: Claimed, auth_token: str, settings: Settings) -> AttemptResult:
    """One HTTP request, signed; redirects not followed, at most a kilobyte of the answer read."""
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
    started = time.monotonic()
    elapsed_ms = lambda: int((time.monotonic() - started) * 1000)  # noqa: E731
    session = guarded_session(settings.callback_allowed_networks)
    try:
        response = session.send(prepared, allow_redirects=False, stream=True,
                                timeout=(settings.callback_connect_timeout_s, settings.callback_read_timeout_s))
        try:
            body = response.raw.read(EXCERPT_BYTES, decode_content=True)
        finally:
            response.close()
    except ForbiddenAddress as refused:
        return AttemptResult(None, str(refused), elapsed_ms(), None, None, forbidden=True)
    except requests.RequestException as error:
        return AttemptResult(None, f"{type(error).__name__}: {error}"[:500], elapsed_ms(), None, None)
    return AttemptResult(response.status_code, None, elapsed_ms(), body.decode("utf-8", "replace"),
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


def _deliver(summary_sid: str) -> None:
    settings = get_settings()
    lease_s = settings.callback_connect_timeout_s + settings.callback_read_timeout_s + 30
    with get_sessionmaker()() as session:
        delivery = deliveries.claim(session, summary_sid, lease_s)
        session.commit()
    clear_callback_in_flight(summary_sid)
    if delivery is None:
        return  # delivered, failed, dropped, not yet due, or being attempted by another worker
    breaker = CircuitBreaker(get_redis(), settings.callback_circuit_threshold, settings.callback_circuit_cooldown_s)
    wait_s = breaker.open_for_s(delivery.host)
    if wait_s > 0:
        log.info("circuit open for %s; waiting %.1fs", delivery.host, wait_s)
        _postpone(summary_sid, wait_s)
        return
    limiter = HostLimiter(get_redis(), settings.callback_max_in_flight_per_host, lease_s)
    if not limiter.acquire(delivery.host):
        _postpone(summary_sid, BUSY_HOST_RETRY_S)
        return
    try:
        result = send(delivery, delivery.auth_token, settings)
    finally:
        limiter.release(delivery.host)
    if not result.forbidden:
        if result.outcome is Outcome.RETRY:
            breaker.record_failure(delivery.host)
        else:
            breaker.record_success(delivery.host)
    _settle(delivery, result, settings)
