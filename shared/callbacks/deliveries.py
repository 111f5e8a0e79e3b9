"""The one writer of `callback_deliveries` and `callback_attempts`: the outbox row written when a
summary finishes, the worker's claim and settlement of each attempt, a postponement, the sweeper's
scan for due deliveries and an operator's redelivery. Every state change is checked against
shared.callbacks.state and made by a guarded UPDATE, so a repeated message changes nothing; the
one unguarded write is the outbox row's upsert, whose conflict is always a new event (a summary
finished again after an operator's retry) replacing the old one, from any state.

A message is only ever sent after the transaction that made the delivery due commits, and never
from here: a write that makes a delivery due returns the message (shared.platform.db.Outgoing) for
its caller to send once committed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import Connection, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from shared.callbacks.event import event_params
from shared.callbacks.state import DeliveryState, can_transition
from shared.errors import IllegalTransition
from shared.models import CallbackDelivery
from shared.platform.db import Outgoing, is_autocommit
from shared.platform.queue import enqueue_callback
from shared.summaries.events import record

PENDING, DELIVERED, FAILED = DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.FAILED


_DELIVERY_COLUMNS = ("summary_sid", "account_sid", "url", "host", "method", "params", "idempotency_token",
                  "attempt_limit", "state")
# A summary has one delivery row, for its latest event. A conflict is a summary that finished again
# after an operator's retry of its failure: the new event replaces the old one (new parameters and
# token, pending again with a fresh budget; the attempt numbers go on, so the history keeps both).
# Text, built once: a statement built per summary cost more CPU than running it, and SQLAlchemy's
# postgresql.insert() with ON CONFLICT has no cache key (compiled on every use).
_UPSERT_DELIVERY = text(f"""
INSERT INTO callback_deliveries AS d ({', '.join(_DELIVERY_COLUMNS)})
VALUES ({', '.join(':' + column for column in _DELIVERY_COLUMNS)})
ON CONFLICT (summary_sid) DO UPDATE SET url = excluded.url, host = excluded.host, method = excluded.method,
    params = excluded.params, idempotency_token = excluded.idempotency_token, state = excluded.state,
    attempt_limit = d.attempts + excluded.attempt_limit, next_attempt_at = now(), leased_until = NULL,
    last_error = NULL, delivered_at = NULL, date_created = now(), date_updated = now()""").bindparams(
    bindparam("params", type_=CallbackDelivery.__table__.c.params.type))


def _check(current: DeliveryState, target: DeliveryState) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(f"{current.value} -> {target.value}")


def add(db, summary, max_attempts: int) -> Outgoing | None:
    """Write the callback's outbox row for a summary that just finished, in the transaction that
    finished it (`db`, a Connection or a Session): finished without its callback never happens. It
    replaces an earlier event's (a failure an operator retried). Its message is returned, for the
    caller to send once that transaction commits; None when the summary has no StatusCallback."""
    if summary is None or not summary.status_callback:
        return None
    db.execute(_UPSERT_DELIVERY, dict(
        summary_sid=summary.sid, account_sid=summary.account_sid, url=summary.status_callback,
        host=(urlsplit(summary.status_callback).hostname or "").lower(), method=summary.status_callback_method,
        params=event_params(summary), idempotency_token=uuid.uuid4().hex, attempt_limit=max_attempts,
        state=PENDING.value))
    return Outgoing(enqueue_callback, (summary.sid,))


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
    # The account's family: its parent's SID, or its own for a parent. A family shares one fair share
    # of the callback threads, as subaccounts cost their parent nothing to create.
    family_sid: str

    @property
    def auth_token(self) -> str:
        from shared.accounts.secrets import decrypt

        return decrypt(self.auth_token_encrypted)


_CLAIM = text("""
UPDATE callback_deliveries AS d
SET leased_until = now() + make_interval(secs => CAST(:lease_s AS float8))
FROM accounts AS a
WHERE d.summary_sid = :sid AND d.state = 'pending' AND d.next_attempt_at <= now()
  AND (d.leased_until IS NULL OR d.leased_until < now()) AND a.sid = d.account_sid
RETURNING d.summary_sid, d.account_sid, d.url, d.host, d.method, d.params, d.idempotency_token, d.attempts,
          d.attempt_limit, d.date_created, a.auth_token_encrypted, COALESCE(a.parent_sid, a.sid)
""")


def _require_autocommit(connection: Connection) -> None:
    # Claim, settle and postpone are one statement each, committed as it returns: a message sent after
    # it must never name a row another transaction could still undo.
    if not is_autocommit(connection):
        raise ValueError("claim, settle and postpone run on a shared.platform.db.autocommit() connection")


def claim(connection: Connection, summary_sid: str, lease_s: float) -> Claimed | None:
    """One round trip: lease the delivery if it is pending, due and free, and read the signing token
    with it. None when it is delivered, failed, dropped, not yet due, or leased by another worker."""
    _require_autocommit(connection)
    row = connection.execute(_CLAIM, {"sid": summary_sid, "lease_s": lease_s}).first()
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
    WHERE summary_sid = :sid AND state = 'pending' AND idempotency_token = :token
    RETURNING summary_sid
)
INSERT INTO callback_attempts (summary_sid, number, attempted_at, outcome, status_code, error, latency_ms,
                               response_excerpt)
SELECT summary_sid, :number, now(), :outcome, :status_code, :attempt_error, :latency_ms, :excerpt FROM settled
RETURNING id
""")


def settle(connection: Connection, delivery: Claimed, target: DeliveryState, attempt: Attempt, error: str | None,
           delay_s: float | None) -> Settled:
    """Record the attempt and the delivery's new state in one statement (or neither, when the summary,
    and so its delivery, was deleted during the attempt, or a newer event replaced the one attempted),
    committed as it returns. A retry's message is returned, to be sent now."""
    _check(PENDING, target)
    _require_autocommit(connection)
    number = delivery.attempts + 1
    recorded = connection.execute(_SETTLE, {
        "sid": delivery.summary_sid, "token": delivery.idempotency_token, "number": number, "state": target.value,
        "error": error,
        "delay_s": delay_s or 0, "outcome": attempt.outcome, "status_code": attempt.status_code,
        "attempt_error": attempt.error, "latency_ms": attempt.latency_ms, "excerpt": attempt.excerpt,
    }).first() is not None
    retry = Outgoing(enqueue_callback, (delivery.summary_sid, delay_s or 0)) if recorded and target is PENDING else None
    return Settled(recorded, retry)


@dataclass(frozen=True)
class Settled:
    recorded: bool  # False: nothing was (the summary was deleted, or a newer event replaced this one)
    retry: Outgoing | None  # the next attempt's message, when there is one, to send now


_POSTPONE = text("""
UPDATE callback_deliveries SET leased_until = NULL,
    next_attempt_at = now() + make_interval(secs => CAST(:delay_s AS float8))
WHERE summary_sid = :sid AND state = 'pending' AND idempotency_token = :token
""")


def postpone(connection: Connection, delivery: Claimed, delay_s: float) -> Outgoing:
    """Give the lease back and try again after delay_s (an open circuit, a busy host): committed as it
    returns; the message that will try again is returned, to be sent now."""
    _check(PENDING, PENDING)
    _require_autocommit(connection)
    connection.execute(_POSTPONE, {"sid": delivery.summary_sid, "token": delivery.idempotency_token,
                                   "delay_s": delay_s})
    return Outgoing(enqueue_callback, (delivery.summary_sid, delay_s))


def due(session: Session, grace_s: float, limit: int) -> list[str]:
    """Pending deliveries that are due (for grace_s already) and not being attempted."""
    return list(session.scalars(
        select(CallbackDelivery.summary_sid)
        .where(CallbackDelivery.state == PENDING.value,
               CallbackDelivery.next_attempt_at < func.now() - dt.timedelta(seconds=grace_s),
               or_(CallbackDelivery.leased_until.is_(None), CallbackDelivery.leased_until < func.now()))
        .order_by(CallbackDelivery.next_attempt_at).limit(limit)
    ))


def redeliver(session: Session, delivery: CallbackDelivery, budget: int, actor: str) -> Outgoing | None:
    """An operator's redelivery of a finished delivery: pending again with a fresh budget of
    attempts, the same event and idempotency token; recorded in the summary's timeline. Its message
    is returned, for the session's commit to send (after_commit). None when it is no longer in the
    state it was read in."""
    previous = DeliveryState(delivery.state)
    _check(previous, PENDING)
    moved = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.summary_sid == delivery.summary_sid, CallbackDelivery.state == previous.value)
        .values(state=PENDING.value, next_attempt_at=func.now(), leased_until=None, date_updated=func.now(),
                attempt_limit=CallbackDelivery.attempts + budget, redeliveries=CallbackDelivery.redeliveries + 1)
    ).rowcount
    if not moved:
        return None
    record(session, delivery.summary_sid, "callback redelivered", actor, previous_state=previous.value)
    return Outgoing(enqueue_callback, (delivery.summary_sid,))
