"""What operators look at: the system's state (status), summaries (jobs), one summary's timeline
(show), callback deliveries. Plain data back; each front end formats it."""

from __future__ import annotations

import datetime as dt

from redis import RedisError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.models import CallbackAttempt, CallbackDelivery, FeedbackSummary, SummaryEvent
from shared.platform.db import get_engine, lift_statement_timeout
from shared.platform.queue import CALLBACKS_QUEUE, SUMMARIES_QUEUE, get_celery, get_redis, queue_depth


def _age_s(moment: dt.datetime | None) -> float | None:
    return None if moment is None else round((dt.datetime.now(dt.timezone.utc) - moment).total_seconds(), 1)


def workers(timeout_s: float = 1.0) -> list[dict]:
    """The workers that answer a ping, and what each is running now (summaries and deliveries)."""
    inspector = get_celery().control.inspect(timeout=timeout_s)
    answered = inspector.ping() or {}
    active = inspector.active() or {}
    return [{"name": name, "running": [{"task": task["name"], "sid": (task.get("args") or [None])[0],
                                        "started_s_ago": _age_s(dt.datetime.fromtimestamp(task["time_start"],
                                                                                          dt.timezone.utc))
                                        if task.get("time_start") else None}
                                       for task in active.get(name, [])]}
            for name in sorted(answered)]


LOCK_TIMEOUT = "5s"  # the longest an operator's command waits for a lock


def scanning_session() -> Session:
    """A session for an operator's look over whole tables (counts by status, a purge's selection): on
    a big install they take longer than a request may, so without the statement timeout. Reads wait
    for no writer, only for a table's exclusive lock (a migration's DDL, a LOCK TABLE): 5 s at most."""
    session = Session(get_engine())
    lift_statement_timeout(session.connection(), LOCK_TIMEOUT)
    return session


def queues() -> tuple[dict | None, str]:
    """Each queue's depth and the age of its oldest message, and Redis's state ("ok", or why not:
    then the queues are None)."""
    found: dict = {}
    try:
        redis = get_redis()
        for queue in (SUMMARIES_QUEUE, CALLBACKS_QUEUE):
            depth, age = queue_depth(redis, queue)
            found[queue] = {"depth": depth, "oldest_age_s": None if age is None else round(age, 1)}
    except RedisError as error:
        return None, f"unreachable: {type(error).__name__}"
    return found, "ok"


def status(ping_timeout_s: float = 1.0) -> dict:
    """The system as PostgreSQL and Redis see it, every row counted (the console counts what stays
    small, console/queries.py). Redis down is when an operator looks most: its part (queues,
    workers) is then None and `redis` says why, and the rest is still shown."""
    queues_found, redis_state = queues()
    with scanning_session() as session:
        by_status = dict(session.execute(select(FeedbackSummary.status, func.count())
                                         .group_by(FeedbackSummary.status)).all())
        oldest_queued = session.scalar(select(func.min(FeedbackSummary.date_updated))
                                       .where(FeedbackSummary.status == "queued"))
        expired = session.scalar(select(func.count()).where(FeedbackSummary.status == "in-progress",
                                                            FeedbackSummary.lease_expires_at < func.now()))
        deliveries = dict(session.execute(select(CallbackDelivery.state, func.count())
                                          .group_by(CallbackDelivery.state)).all())
    return {
        "redis": redis_state,
        "queues": queues_found,
        "summaries": {**{s: by_status.get(s, 0) for s in ("queued", "in-progress", "completed", "failed")},
                      "oldest_queued_age_s": _age_s(oldest_queued), "expired_leases": expired},
        "deliveries": {s: deliveries.get(s, 0) for s in ("pending", "delivered", "failed")},
        "workers": workers(ping_timeout_s) if queues_found is not None else None,
    }


def jobs(status: str | None, account: str | None, since: dt.datetime | None, limit: int) -> list[dict]:
    query = (select(FeedbackSummary, CallbackDelivery.state)
             .outerjoin(CallbackDelivery, CallbackDelivery.summary_sid == FeedbackSummary.sid)
             .order_by(FeedbackSummary.date_created.desc()).limit(limit))
    if status:
        query = query.where(FeedbackSummary.status == status)
    if account:
        query = query.where(FeedbackSummary.account_sid == account)
    if since:
        query = query.where(FeedbackSummary.date_created >= since)
    with scanning_session() as session:
        return [{"sid": s.sid, "account_sid": s.account_sid, "status": s.status, "start_date": str(s.start_date),
                 "end_date": str(s.end_date), "date_created": s.date_created, "date_updated": s.date_updated,
                 "attempts": s.attempts, "claimed_by": s.claimed_by, "failure_reason": s.failure_reason,
                 "callback": state}
                for s, state in session.execute(query)]


def show(sid: str) -> dict | None:
    """One summary's timeline: its events and its callback attempts, in time order."""
    with Session(get_engine()) as session:
        summary = session.get(FeedbackSummary, sid)
        if summary is None:
            return None
        timeline = [{"at": e.at, "what": e.kind, "by": e.actor, **(e.detail or {})}
                    for e in session.scalars(select(SummaryEvent).where(SummaryEvent.summary_sid == sid))]
        timeline += [{"at": a.attempted_at, "what": f"callback attempt {a.number}: {a.outcome}",
                      "status_code": a.status_code, "error": a.error, "latency_ms": a.latency_ms,
                      "response": (a.response_excerpt or "")[:200] or None}
                     for a in session.scalars(select(CallbackAttempt).where(CallbackAttempt.summary_sid == sid))]
        delivery = session.get(CallbackDelivery, sid)
    timeline.sort(key=lambda entry: entry["at"])
    return {
        "sid": summary.sid, "account_sid": summary.account_sid, "status": summary.status,
        "request_id": summary.request_id, "window": f"{summary.start_date} .. {summary.end_date}",
        "include_subaccounts": summary.include_subaccounts, "failure_reason": summary.failure_reason,
        "claimed_by": summary.claimed_by, "lease_expires_at": summary.lease_expires_at,
        "callback": None if delivery is None else {
            "url": delivery.url, "method": delivery.method, "state": delivery.state, "attempts": delivery.attempts,
            "next_attempt_at": delivery.next_attempt_at if delivery.state == "pending" else None,
            "idempotency_token": delivery.idempotency_token},
        "timeline": timeline,
    }


def delivery_row(delivery: CallbackDelivery) -> dict:
    return {"summary_sid": delivery.summary_sid, "state": delivery.state, "method": delivery.method,
            "url": delivery.url, "host": delivery.host, "attempts": delivery.attempts,
            "last_error": delivery.last_error, "next_attempt_at": delivery.next_attempt_at,
            "delivered_at": delivery.delivered_at, "redeliveries": delivery.redeliveries,
            "idempotency_token": delivery.idempotency_token, "date_updated": delivery.date_updated}


def deliveries(state: str | None, limit: int) -> list[dict]:
    """Callback deliveries, most recently changed first."""
    query = select(CallbackDelivery).order_by(CallbackDelivery.date_updated.desc()).limit(limit)
    if state:
        query = query.where(CallbackDelivery.state == state)
    with Session(get_engine()) as session:
        return [delivery_row(d) for d in session.scalars(query)]
