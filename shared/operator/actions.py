"""What operators do, for every front end: retry failed summaries, redeliver callbacks (one, or a
selection planned first and sent at a capped rate, reporting as it goes, stoppable), purge old
failures, close a destination's circuit. Each returns what it did and never prints; each takes
`actor`, who acted (the CLI passes the OS user, shared.summaries.events.operator(); the console its
user), recorded in the summary's timeline, or in the log where there is no summary to hold it
(a purge deletes the timelines; a circuit belongs to a destination).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.callbacks import deliveries
from shared.callbacks.circuit import CircuitBreaker
from shared.callbacks.state import DeliveryState
from shared.errors import ActionRefused
from shared.models import CallbackDelivery, FeedbackSummary
from shared.operator.views import LOCK_TIMEOUT, scanning_session
from shared.platform.config import Settings
from shared.platform.db import after_commit, get_engine, lift_statement_timeout
from shared.platform.queue import enqueue_summary, get_redis
from shared.summaries import lifecycle

log = logging.getLogger(__name__)


def retry(sids: list[str], actor: str) -> dict[str, str]:
    """Each failed summary back to queued, and its job sent; what happened to each sid."""
    outcome = {}
    for sid in sids:
        with Session(get_engine()) as session:
            moved = lifecycle.retry_failed(session, sid, actor)
            sent = after_commit(session, enqueue_summary, sid) if moved is not None else None
            session.commit()
        if moved is None:
            outcome[sid] = "not failed (or no such summary): left alone"
        else:
            outcome[sid] = "queued" if sent.result else "queued; the sweeper will send it (Redis down)"
    return outcome


@dataclass(frozen=True)
class RedeliverySelection:
    """Which finished deliveries to send again: named summaries, or every one in a state (since a
    time, to a host)."""

    sids: tuple[str, ...] = ()
    state: str | None = None
    since: dt.datetime | None = None
    host: str | None = None
    account: str | None = None  # the console's filters: an account, and an end to the time range
    until: dt.datetime | None = None

    def check(self) -> None:
        narrowing = self.since or self.host or self.account or self.until
        if self.sids and (self.state or narrowing):
            raise ActionRefused("name summaries or choose by --state, not both")
        if narrowing and not self.state:
            raise ActionRefused("--since and --host select among a --state")
        if not self.sids and not self.state:
            raise ActionRefused("name summaries (FS...) or a --state to redeliver")


@dataclass(frozen=True)
class PlannedDelivery:
    summary_sid: str
    state: str
    method: str
    url: str
    attempts: int
    idempotency_token: str
    params: dict


@dataclass(frozen=True)
class RedeliveryPlan:
    """What a redelivery would send (a dry run shows it as it is), and the named summaries that have
    no finished delivery."""

    deliveries: list[PlannedDelivery]
    missing: list[str] = field(default_factory=list)


def _selected(selection: RedeliverySelection, query):
    query = query.where(CallbackDelivery.state != DeliveryState.PENDING.value)
    if selection.sids:
        return query.where(CallbackDelivery.summary_sid.in_(selection.sids))
    query = query.where(CallbackDelivery.state == selection.state)
    if selection.since:
        query = query.where(CallbackDelivery.date_updated >= selection.since)
    if selection.until:
        query = query.where(CallbackDelivery.date_updated < selection.until)
    if selection.host:
        query = query.where(CallbackDelivery.host == selection.host.lower())
    if selection.account:
        query = query.where(CallbackDelivery.account_sid == selection.account)
    return query


def count_redelivery(selection: RedeliverySelection) -> int:
    """How many deliveries the selection holds now (a dry run's count, without loading them)."""
    selection.check()
    with scanning_session() as session:
        return session.scalar(_selected(selection, select(func.count()).select_from(CallbackDelivery)))


def plan_redelivery(selection: RedeliverySelection, limit: int | None = None) -> RedeliveryPlan:
    """The selection's deliveries, oldest change first (the first `limit` of them)."""
    selection.check()
    query = _selected(selection, select(CallbackDelivery)).order_by(CallbackDelivery.date_updated,
                                                                    CallbackDelivery.summary_sid).limit(limit)
    with scanning_session() as session:
        chosen = [PlannedDelivery(d.summary_sid, d.state, d.method, d.url, d.attempts, d.idempotency_token,
                                  dict(d.params)) for d in session.scalars(query)]
    missing = sorted(set(selection.sids) - {d.summary_sid for d in chosen})
    return RedeliveryPlan(chosen, missing)


@dataclass(frozen=True)
class RedeliveryProgress:
    done: int  # deliveries handled so far, this one included
    total: int
    delivery: PlannedDelivery
    sent: bool  # False: it changed since the plan was made (sent meanwhile, or deleted); left alone


def redeliver(plan: RedeliveryPlan, actor: str, settings: Settings, rate_per_s: float = 10.0,
              stop: threading.Event | None = None) -> Iterator[RedeliveryProgress]:
    """Send each planned delivery again: pending with a fresh budget of attempts, the same event
    and idempotency token, recorded in its summary's timeline and sent once committed. At most
    `rate_per_s` a second; one step reported per delivery; ends early once `stop` is set (or when
    the caller stops iterating)."""
    if not rate_per_s > 0:
        raise ActionRefused("--rate must be positive")
    stop = stop or threading.Event()
    total = len(plan.deliveries)
    for done, planned in enumerate(plan.deliveries, 1):
        if stop.is_set():
            return
        with Session(get_engine()) as session:
            delivery = session.get(CallbackDelivery, planned.summary_sid)
            outgoing = (deliveries.redeliver(session, delivery, settings.callback_max_attempts, actor)
                        if delivery is not None and delivery.state == planned.state else None)
            sent = outgoing is not None and after_commit(session, outgoing)
            session.commit()  # and, committed, its message
        yield RedeliveryProgress(done, total, planned, bool(sent))
        if done < total:
            stop.wait(1 / rate_per_s)


def redeliver_one(summary_sid: str, actor: str, settings: Settings) -> bool:
    """One summary's finished delivery sent again; False when it has none (none, or still pending)."""
    plan = plan_redelivery(RedeliverySelection(sids=(summary_sid,)))
    return any(step.sent for step in redeliver(plan, actor, settings))


def _purgeable(older_than_days: float):
    cutoff = func.now() - dt.timedelta(days=older_than_days)
    # date_created's bound is implied (no summary changes before it exists): with it the status and
    # date_created index answers as a range instead of reading every failed summary's row.
    return FeedbackSummary.status == "failed", FeedbackSummary.date_updated < cutoff, FeedbackSummary.date_created < cutoff


def count_purgeable(older_than_days: float) -> int:
    """How many purge() would delete now, without loading them."""
    with scanning_session() as session:
        return session.scalar(select(func.count()).select_from(FeedbackSummary).where(*_purgeable(older_than_days)))


def purgeable(older_than_days: float) -> list[str]:
    """The failed summaries last changed more than this many days ago: what purge() would delete."""
    with scanning_session() as session:
        return list(session.scalars(select(FeedbackSummary.sid).where(*_purgeable(older_than_days))))


def purge(sids: list[str], actor: str) -> int:
    """Delete those of these summaries that are failed (their events and deliveries go with them)."""
    with get_engine().begin() as connection:
        # Deleting a year of failures may take long; waiting for a lock may not.
        lift_statement_timeout(connection, LOCK_TIMEOUT)
        deleted = lifecycle.purge_failed(connection, sids)
    log.warning("operator purged %d failed summaries", deleted, extra={"actor": actor})
    return deleted


def close_circuit(account_sid: str, address: str, actor: str, settings: Settings) -> bool:
    """Close the circuit of an account's destination (the address its URL resolved to) at once: the
    next attempt goes through. True when it was open or counting failures."""
    breaker = CircuitBreaker(get_redis(), settings.callback_circuit_threshold, settings.callback_circuit_cooldown_s,
                             settings.callback_attempt_deadline_s)
    closed = breaker.close(f"{account_sid}:{address}")
    log.warning("operator closed the circuit of %s for %s", address, account_sid,
                extra={"actor": actor, "was_open": closed})
    return closed
