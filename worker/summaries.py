"""compute_summary: claim, aggregate in PostgreSQL, store `completed` in one transaction."""

from __future__ import annotations

import logging
import time

from celery import Task
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared import logs, metrics, rollups
from shared.callbacks import add_delivery
from shared.config import get_settings
from shared.db import get_sessionmaker
from shared.lifecycle import claim, transition
from shared.models import FeedbackSummary
from shared.queue import COMPUTE_SUMMARY, clear_in_flight, enqueue_callback
from shared.status import SummaryStatus
from worker.celery_app import app

log = logging.getLogger(__name__)

# The database being unreachable is worth waiting for; anything else will not fix itself.
TRANSIENT_ERRORS = (OperationalError, PoolTimeout)
MAX_TRANSIENT_RETRIES = 8


def _owner(task: Task) -> str:
    # Retries of one message keep its task id, so they may resume their own claim at once.
    return f"{task.request.hostname}/{task.request.id}"


@app.task(name=COMPUTE_SUMMARY, bind=True, acks_late=True, ignore_result=True)
def compute_summary(self: Task, summary_sid: str) -> None:
    with logs.bind(summary_sid=summary_sid, task_id=self.request.id):
        _compute(self, summary_sid)


def _compute(self: Task, summary_sid: str) -> None:
    owner, sessions = _owner(self), get_sessionmaker()
    started = time.perf_counter()
    try:
        with sessions() as session:
            summary = claim(session, summary_sid, owner, get_settings().summary_lease_s)
            session.commit()
            clear_in_flight(summary_sid)
            if summary is None:
                log.info("not claimable: finished, deleted or leased by another worker")
                return
            result = rollups.compute(session, summary.account_sid, summary.include_subaccounts,
                                        summary.start_date, summary.end_date)
            done = transition(session, summary_sid, SummaryStatus.IN_PROGRESS, SummaryStatus.COMPLETED,
                              FeedbackSummary.claimed_by == owner, actor=owner, lease_expires_at=None,
                              **result.columns())
            has_callback = _hand_over(session, done)
            session.commit()
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            _fail(summary_sid, owner, f"database unavailable after {self.request.retries} retries: {exc}")
            return
        countdown = min(60, 2 ** self.request.retries)
        log.warning("transient database error; retrying in %ss", countdown)
        raise self.retry(exc=exc, countdown=countdown)
    except Exception as exc:
        log.exception("summary failed")
        _fail(summary_sid, owner, f"{type(exc).__name__}: {exc}")
        return
    if done is None:
        log.info("lost the claim before completing (deleted or taken over)")
        return
    metrics.COMPUTE_SECONDS.observe(time.perf_counter() - started)
    metrics.SUMMARIES_FINISHED.labels("completed").inc()
    log.info("summary completed", extra={"account_sid": done.account_sid})
    if has_callback:
        enqueue_callback(summary_sid)


def _hand_over(session, finished: FeedbackSummary | None) -> bool:
    """Queue the callback of a summary that just finished, in the transaction that finished it:
    finished without its callback never happens. True when the caller must send it after commit."""
    return finished is not None and add_delivery(session, finished, get_settings().callback_max_attempts)


def _fail(summary_sid: str, owner: str, reason: str) -> None:
    with get_sessionmaker()() as session:
        failed = transition(session, summary_sid, SummaryStatus.IN_PROGRESS, SummaryStatus.FAILED,
                            FeedbackSummary.claimed_by == owner, actor=owner, lease_expires_at=None,
                            failure_reason=reason[:2000])
        has_callback = _hand_over(session, failed)
        session.commit()
    if failed is not None:
        metrics.SUMMARIES_FINISHED.labels("failed").inc()
    if has_callback:
        enqueue_callback(summary_sid)
