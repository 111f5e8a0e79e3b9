"""The one writer of `callback_deliveries` and `callback_attempts`: the outbox row written when a
summary finishes, the worker's claim and settlement of each attempt, a postponement, the sweeper's
scan for due deliveries and an operator's redelivery. Every state change is checked against
shared.callbacks.state and made by a guarded UPDATE, so a repeated message changes nothing.

A message is only ever sent after the transaction that made the delivery due commits.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.callbacks.event import event_params
from shared.callbacks.state import DeliveryState, can_transition
from shared.models import Account, CallbackDelivery, FeedbackSummary
from shared.platform.db import after_commit
from shared.platform.queue import enqueue_callback
from shared.summaries.events import record

PENDING, DELIVERED, FAILED = DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.FAILED


class IllegalTransition(ValueError):
    """Raised when code asks for a delivery state change the table does not allow."""


def _check(current: DeliveryState, target: DeliveryState) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(f"{current.value} -> {target.value}")


def add(session: Session, summary: FeedbackSummary, max_attempts: int) -> bool:
    """Queue the callback of a summary that just finished, in the transaction that finished it (an
    outbox: finished without its callback never happens); sent once that commits. False when the
    summary has no StatusCallback."""
    if summary is None or not summary.status_callback:
        return False
    statement = insert(CallbackDelivery).values(
        summary_sid=summary.sid, account_sid=summary.account_sid, url=summary.status_callback,
        host=(urlsplit(summary.status_callback).hostname or "").lower(), method=summary.status_callback_method,
        params=event_params(summary), idempotency_token=uuid.uuid4().hex, attempt_limit=max_attempts,
        state=PENDING.value,
    ).on_conflict_do_nothing(index_elements=[CallbackDelivery.summary_sid])
    session.execute(statement)
    after_commit(session, enqueue_callback, summary.sid)
    return True


@dataclass(frozen=True)
class Claimed:
    """What an attempt needs of its delivery, and the account's token to sign with."""

    summary_sid: str
    account_sid: str
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
        from shared.accounts.secrets import decrypt

        return decrypt(self.auth_token_encrypted)


def claim(session: Session, summary_sid: str, lease_s: float) -> Claimed | None:
    """One round trip: lease the delivery if it is pending, due and free, and read the signing token
    with it. None when it is delivered, failed, dropped, not yet due, or leased by another worker."""
    table = CallbackDelivery.__table__
    statement = (
        update(table)
        .where(table.c.summary_sid == summary_sid, table.c.state == PENDING.value,
               table.c.next_attempt_at <= func.now(),
               or_(table.c.leased_until.is_(None), table.c.leased_until < func.now()),
               Account.sid == table.c.account_sid)
        .values(leased_until=func.now() + dt.timedelta(seconds=lease_s))
        .returning(table.c.summary_sid, table.c.account_sid, table.c.url, table.c.host, table.c.method, table.c.params,
                   table.c.idempotency_token, table.c.attempts, table.c.attempt_limit, table.c.date_created,
                   Account.auth_token_encrypted)
    )
    row = session.execute(statement).first()
    return Claimed(*row) if row else None


@dataclass(frozen=True)
class Attempt:
    """One request as it went, for callback_attempts."""

    outcome: str  # delivered, retry, failed
    status_code: int | None
    error: str | None
    latency_ms: int
    excerpt: str | None


_SETTLE = text("""
WITH settled AS (
    UPDATE callback_deliveries
    SET attempts = :number, state = CAST(:state AS varchar), leased_until = NULL, last_error = :error,
        date_updated = now(), next_attempt_at = now() + make_interval(secs => CAST(:delay_s AS float8)),
        delivered_at = CASE WHEN CAST(:state AS varchar) = 'delivered' THEN now() END
    WHERE summary_sid = :sid AND state = 'pending'
    RETURNING summary_sid
)
INSERT INTO callback_attempts (summary_sid, number, attempted_at, outcome, status_code, error, latency_ms,
                               response_excerpt)
SELECT summary_sid, :number, now(), :outcome, :status_code, :attempt_error, :latency_ms, :excerpt FROM settled
RETURNING id
""")


def settle(session: Session, delivery: Claimed, target: DeliveryState, attempt: Attempt, error: str | None,
           delay_s: float | None) -> bool:
    """Record the attempt and the delivery's new state in one statement (or neither, when the summary,
    and so its delivery, was deleted during the attempt); a retry's message goes out after commit.
    False when nothing was recorded."""
    _check(PENDING, target)
    number = delivery.attempts + 1
    recorded = session.execute(_SETTLE, {
        "sid": delivery.summary_sid, "number": number, "state": target.value, "error": error,
        "delay_s": delay_s or 0, "outcome": attempt.outcome, "status_code": attempt.status_code,
        "attempt_error": attempt.error, "latency_ms": attempt.latency_ms, "excerpt": attempt.excerpt,
    }).first()
    if recorded is not None and target is PENDING:
        after_commit(session, enqueue_callback, delivery.summary_sid, delay_s or 0)
    return recorded is not None


def postpone(session: Session, summary_sid: str, delay_s: float) -> None:
    """Give the lease back and try again after delay_s (an open circuit, a busy host)."""
    _check(PENDING, PENDING)
    session.execute(update(CallbackDelivery)
                    .where(CallbackDelivery.summary_sid == summary_sid, CallbackDelivery.state == PENDING.value)
                    .values(leased_until=None, next_attempt_at=func.now() + dt.timedelta(seconds=delay_s)))
    after_commit(session, enqueue_callback, summary_sid, delay_s)


def due(session: Session, grace_s: float, limit: int) -> list[str]:
    """Pending deliveries that are due (for grace_s already) and not being attempted."""
    return list(session.scalars(
        select(CallbackDelivery.summary_sid)
        .where(CallbackDelivery.state == PENDING.value,
               CallbackDelivery.next_attempt_at < func.now() - dt.timedelta(seconds=grace_s),
               or_(CallbackDelivery.leased_until.is_(None), CallbackDelivery.leased_until < func.now()))
        .order_by(CallbackDelivery.next_attempt_at).limit(limit)
    ))


def redeliver(session: Session, delivery: CallbackDelivery, budget: int, actor: str) -> bool:
    """An operator's redelivery of a finished delivery: pending again with a fresh budget of
    attempts, the same event and idempotency token; recorded in the summary's timeline and sent
    after commit. False when it is no longer in the state it was read in."""
    previous = DeliveryState(delivery.state)
    _check(previous, PENDING)
    moved = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.summary_sid == delivery.summary_sid, CallbackDelivery.state == previous.value)
        .values(state=PENDING.value, next_attempt_at=func.now(), leased_until=None, date_updated=func.now(),
                attempt_limit=CallbackDelivery.attempts + budget, redeliveries=CallbackDelivery.redeliveries + 1)
    ).rowcount
    if not moved:
        return False
    record(session, delivery.summary_sid, "callback redelivered", actor, previous_state=previous.value)
    after_commit(session, enqueue_callback, delivery.summary_sid)
    return True
