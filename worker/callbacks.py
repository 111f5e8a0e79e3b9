"""callbacks.deliver: one attempt at a summary's StatusCallback, recorded, then retried or settled.

The delivery row in PostgreSQL is the state (pending, delivered, failed; the next attempt's time);
the message only says "try now". A claim with a lease makes two messages for one delivery harmless.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

import requests
from sqlalchemy import func, or_, update
from sqlalchemy.orm import Session

from shared.callbacks import request_target, signature, signing_token
from shared.config import Settings, get_settings
from shared.db import get_sessionmaker
from shared.models import CallbackAttempt, CallbackDelivery
from shared.queue import DELIVER_CALLBACK, clear_callback_in_flight, enqueue_callback, get_redis
from worker.celery_app import app
from worker.circuit import CircuitBreaker, HostLimiter
from worker.retry_policy import Outcome, classify, next_delay_s, retry_after_s
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


def _claim(session: Session, summary_sid: str, lease_s: float) -> CallbackDelivery | None:
    statement = (
        update(CallbackDelivery)
        .where(CallbackDelivery.summary_sid == summary_sid, CallbackDelivery.state == "pending",
               CallbackDelivery.next_attempt_at <= func.now(),
               or_(CallbackDelivery.leased_until.is_(None), CallbackDelivery.leased_until < func.now()))
        .values(leased_until=func.now() + dt.timedelta(seconds=lease_s))
        .returning(CallbackDelivery)
    )
    return session.scalars(statement, execution_options={"populate_existing": True}).one_or_none()


def send(delivery: CallbackDelivery, auth_token: str, settings: Settings) -> AttemptResult:
    """One HTTP request, signed; redirects not followed, at most a kilobyte of the answer read."""
    url, form = request_target(delivery.url, delivery.method, delivery.params)
    prepared = requests.Request(delivery.method, url, data=form, headers={
        "User-Agent": USER_AGENT,
        "I-Twilio-Idempotency-Token": delivery.idempotency_token,
    }).prepare()
    # Signed over the URL exactly as it goes on the wire, after requests has normalised it.
    prepared.headers["X-Twilio-Signature"] = signature(auth_token, prepared.url, form)
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


def _settle(summary_sid: str, delivery: CallbackDelivery, result: AttemptResult, settings: Settings) -> float | None:
    """Record the attempt and the delivery's new state; the delay before the next attempt, if any."""
    number = delivery.attempts + 1
    outcome = result.outcome
    delay_s = None
    if outcome is Outcome.RETRY and number < delivery.attempt_limit:
        delay_s = next_delay_s(number, retry_after_s(result.retry_after, dt.datetime.now(dt.timezone.utc)),
                               settings.callback_backoff_initial_s, settings.callback_backoff_max_s)
    elif outcome is Outcome.RETRY:
        outcome = Outcome.FINAL
    state = {Outcome.DELIVERED: "delivered", Outcome.FINAL: "failed"}.get(outcome, "pending")
    error = result.error or (None if outcome is Outcome.DELIVERED else f"HTTP {result.status_code}")
    with get_sessionmaker()() as session:
        updated = session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.summary_sid == summary_sid)
            .values(attempts=number, state=state, leased_until=None, last_error=error, date_updated=func.now(),
                    next_attempt_at=func.now() + dt.timedelta(seconds=delay_s or 0),
                    delivered_at=func.now() if state == "delivered" else None)
            .returning(CallbackDelivery.summary_sid)
        ).first()
        if updated is None:  # the summary was deleted during the attempt: nothing left to record
            session.rollback()
            return None
        session.add(CallbackAttempt(
            summary_sid=summary_sid, number=number, attempted_at=func.now(), outcome=outcome.value,
            status_code=result.status_code, error=result.error, latency_ms=result.latency_ms,
            response_excerpt=result.excerpt,
        ))
        session.commit()
    log.info("callback attempt %d: %s", number, outcome.value,
             extra={"summary_sid": summary_sid, "status_code": result.status_code, "latency_ms": result.latency_ms})
    return delay_s


def _postpone(summary_sid: str, delay_s: float) -> None:
    with get_sessionmaker()() as session:
        session.execute(update(CallbackDelivery).where(CallbackDelivery.summary_sid == summary_sid)
                        .values(leased_until=None, next_attempt_at=func.now() + dt.timedelta(seconds=delay_s)))
        session.commit()
    enqueue_callback(summary_sid, delay_s)


@app.task(name=DELIVER_CALLBACK, acks_late=True, ignore_result=True)
def deliver_callback(summary_sid: str) -> None:
    settings = get_settings()
    lease_s = settings.callback_connect_timeout_s + settings.callback_read_timeout_s + 30
    with get_sessionmaker()() as session:
        delivery = _claim(session, summary_sid, lease_s)
        token = signing_token(session, delivery.account_sid) if delivery is not None else None
        session.commit()
    clear_callback_in_flight(summary_sid)
    if delivery is None:
        return  # delivered, failed, dropped, not yet due, or being attempted by another worker
    breaker = CircuitBreaker(get_redis(), settings.callback_circuit_threshold, settings.callback_circuit_cooldown_s)
    wait_s = breaker.open_for_s(delivery.host)
    if wait_s > 0:
        log.info("circuit open for %s; waiting %.1fs", delivery.host, wait_s, extra={"summary_sid": summary_sid})
        _postpone(summary_sid, wait_s)
        return
    limiter = HostLimiter(get_redis(), settings.callback_max_in_flight_per_host, lease_s)
    if not limiter.acquire(delivery.host):
        _postpone(summary_sid, BUSY_HOST_RETRY_S)
        return
    try:
        result = send(delivery, token, settings)
    finally:
        limiter.release(delivery.host)
    if not result.forbidden:
        if result.outcome is Outcome.RETRY:
            breaker.record_failure(delivery.host)
        else:
            breaker.record_success(delivery.host)
    delay_s = _settle(summary_sid, delivery, result, settings)
    if delay_s is not None:
        enqueue_callback(summary_sid, delay_s)
