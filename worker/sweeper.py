"""The sweeper: re-sends the compute message of every summary whose message was lost.

Lost means: `queued` with no message in flight (the enqueue failed, or Redis lost its data), or
`in-progress` with an expired lease (the worker died). Sending twice is harmless: the claim is
a guarded update, so only one worker computes a summary.

It also sends the message of every callback delivery that is due and has none on its way; and,
less often, removes the provisional calls nothing confirmed (shared/calls/provisional.py).
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, select

from shared.callbacks import deliveries
from shared.calls import provisional
from shared.models import FeedbackSummary
from shared.platform import heartbeat, metrics
from shared.platform.config import get_settings
from shared.platform.db import get_engine, get_sessionmaker
from shared.platform.queue import (
    EXPIRE_PROVISIONAL_CALLS,
    SWEEP,
    callbacks_without_message,
    enqueue_callback,
    enqueue_summary,
    get_redis,
    without_message,
)
from shared.summaries.status import SummaryStatus
from worker.celery_app import app
from worker.tasks import Task

log = logging.getLogger(__name__)

# A summary created this recently may have its message sent but its marker not yet written.
QUEUED_GRACE_S = 5
BATCH = 1000


def lost_summaries() -> list[str]:
    with get_sessionmaker()() as session:
        queued = session.scalars(
            select(FeedbackSummary.sid)
            .where(FeedbackSummary.status == SummaryStatus.QUEUED.value,
                   FeedbackSummary.date_updated < func.now() - dt.timedelta(seconds=QUEUED_GRACE_S))
            .order_by(FeedbackSummary.date_updated).limit(BATCH)
        ).all()
        expired = session.scalars(
            select(FeedbackSummary.sid)
            .where(FeedbackSummary.status == SummaryStatus.IN_PROGRESS.value,
                   FeedbackSummary.lease_expires_at < func.now())
            .order_by(FeedbackSummary.lease_expires_at).limit(BATCH)
        ).all()
    return without_message(get_redis(), [*queued, *expired])


def due_callbacks() -> list[str]:
    """Pending deliveries that are due, not being attempted, and have no message on its way: their
    retry was too far off for a delayed message, or Redis lost the message."""
    with get_sessionmaker()() as session:
        due = deliveries.due(session, QUEUED_GRACE_S, BATCH)
    return callbacks_without_message(get_redis(), due)


# Periodic: the next run is the retry of a transient error (transient_retries = 0).
@app.task(name=SWEEP, base=Task, ignore_result=True, transient_retries=0)
def sweep() -> int:
    lost = lost_summaries()
    resent = sum(enqueue_summary(sid) for sid in lost)
    metrics.SWEEPER_RECOVERED.labels("summary").inc(resent)
    if lost:
        log.warning("sweeper re-sent %d of %d lost summaries", resent, len(lost))
    due = due_callbacks()
    sent = sum(enqueue_callback(sid) for sid in due)
    metrics.SWEEPER_RECOVERED.labels("callback").inc(sent)
    if due:
        log.info("sweeper sent %d of %d due callbacks", sent, len(due))
    heartbeat.record_sweep(get_redis())  # the scheduler sent this: it is alive (the console shows it)
    return resent + sent


@app.task(name=EXPIRE_PROVISIONAL_CALLS, base=Task, ignore_result=True, transient_retries=0)
def expire_provisional_calls() -> int:
    """Batch after batch, each its own transaction, until none is left past its grace."""
    grace_s, removed, handed = get_settings().provisional_call_grace_s, 0, 0
    for settle in (provisional.hand_over, provisional.expire):
        while True:
            with get_engine().begin() as connection:
                batch = settle(connection, grace_s)
            if settle is provisional.hand_over:
                handed += len(batch)
            else:
                removed += len(batch)
            if len(batch) < provisional.EXPIRY_BATCH:
                break
    if handed:
        log.warning("gave %d provisional calls to the accounts whose status callbacks claimed them", handed)
    if removed:
        log.warning("removed %d provisional calls (and their feedback) that no call source confirmed within %ds",
                    removed, grace_s)
    return removed + handed
