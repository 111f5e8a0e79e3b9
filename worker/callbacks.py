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
from sqlalchemy import func, or_, text, update
from sqlalchemy.orm import Session

from shared import logs, metrics
from shared.callbacks import request_target, signature
from shared.config import Settings, get_settings
from shared.db import get_sessionmaker
from shared.models import Account, CallbackDelivery
from shared.queue import DELIVER_CALLBACK, clear_callback_in_flight, enqueue_callback, get_redis
from shared.secrets import decrypt
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


@dataclass(frozen=True)
class Claimed:
    """What an attempt needs of its delivery, and the account's token to sign with."""

    summary_sid: str
    url: str
    host: str
    method: str
    params: dict
    idempotency_token: str
    attempts: int
    attempt_limit: int
    date_created: dt.datetime  # when the summary finished and the event was written
    auth_token_encrypted: str

    @property
    def auth_token(self) -> str:
        return decrypt(self.auth_token_encrypted)


def _claim(session: Session, summary_sid: str, lease_s: float) -> Claimed | None:
    """One round trip: lease the delivery if it is due and free, and read the signing token with it."""
    table = CallbackDelivery.__table__
    statement = (
        update(table)
        .where(table.c.summary_sid == summary_sid, table.c.state == "pending", table.c.next_attempt_at <= func.now(),
               or_(table.c.leased_until.is_(None), table.c.leased_until < func.now()),
               Account.sid == table.c.account_sid)
        .values(leased_until=func.now() + dt.timedelta(seconds=lease_s))
        .returning(table.c.summary_sid, table.c.url, table.c.host, table.c.method, table.c.params,
                   table.c.idempotency_token, table.c.attempts, table.c.attempt_limit, table.c.date_created,
                   Account.auth_token_encrypted)
    )
    row = session.execute(statement).first()
    return Claimed(*row) if row else None


def send(delivery: Claimed | CallbackDelivery, auth_token: str, settings: Settings) -> AttemptResult:
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


SETTLE = text("""
WITH settled AS (
    UPDATE callback_deliveries
    SET attempts = :number, state = CAST(:state AS varchar), leased_until = NULL, last_error = :error,
        date_updated = now(), next_attempt_at = now() + make_interval(secs => CAST(:delay_s AS float8)),
        delivered_at = CASE WHEN CAST(:state AS varchar) = 'delivered' THEN now() END
    WHERE summary_sid = :sid
    RETURNING summary_sid
)
INSERT INTO callback_attempts (summary_sid, number, attempted_at, outcome, status_code, error, latency_ms,
                               response_excerpt)
SELECT summary_sid, :number, now(), :outcome, :status_code, :attempt_error, :latency_ms, :excerpt FROM settled
RETURNING id
""")


def _settle(summary_sid: str, delivery: Claimed, result: AttemptResult, settings: Settings) -> float | None:
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
        # One statement: the delivery's new state and the attempt's record, or neither when the
        # summary (and so its delivery) was deleted during the attempt.
        recorded = session.execute(SETTLE, {
            "sid": summary_sid, "number": number, "state": state, "error": error, "delay_s": delay_s or 0,
            "outcome": outcome.value, "status_code": result.status_code, "attempt_error": result.error,
            "latency_ms": result.latency_ms, "excerpt": result.excerpt,
        }).first()
        session.commit()
    if recorded is None:
        return None
    metrics.CALLBACK_ATTEMPTS.labels(outcome.value).inc()
    metrics.CALLBACK_LATENCY.observe(result.latency_ms / 1000)
    if outcome is Outcome.DELIVERED:
        metrics.CALLBACK_DELIVERY.observe((dt.datetime.now(dt.timezone.utc) - delivery.date_created).total_seconds())
    log.info("callback attempt %d: %s", number, outcome.value,
             extra={"status_code": result.status_code, "latency_ms": result.latency_ms})
    return delay_s


def _postpone(summary_sid: str, delay_s: float) -> None:
    with get_sessionmaker()() as session:
        session.execute(update(CallbackDelivery).where(CallbackDelivery.summary_sid == summary_sid)
                        .values(leased_until=None, next_attempt_at=func.now() + dt.timedelta(seconds=delay_s)))
        session.commit()
    enqueue_callback(summary_sid, delay_s)


@app.task(name=DELIVER_CALLBACK, bind=True, acks_late=True, ignore_result=True)
def deliver_callback(self, summary_sid: str) -> None:
    with logs.bind(summary_sid=summary_sid, task_id=self.request.id):
        _deliver(summary_sid)


def _deliver(summary_sid: str) -> None:
    settings = get_settings()
    lease_s = settings.callback_connect_timeout_s + settings.callback_read_timeout_s + 30
    with get_sessionmaker()() as session:
        delivery = _claim(session, summary_sid, lease_s)
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
    delay_s = _settle(summary_sid, delivery, result, settings)
    if delay_s is not None:
        enqueue_callback(summary_sid, delay_s)
