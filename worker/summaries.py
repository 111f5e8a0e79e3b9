"""compute_summary: claim, aggregate in PostgreSQL, store `completed` (with its callback's delivery)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Task
from sqlalchemy import Connection, Row

from shared.callbacks import deliveries
from shared.platform import logs, metrics
from shared.platform.config import get_settings
from shared.platform.db import TRANSIENT_ERRORS, autocommit, get_engine, send_committed
from shared.platform.queue import COMPUTE_SUMMARY, clear_in_flight, enqueue_callback
from shared.safe_text import safe
from shared.summaries.lifecycle import claim, complete, fail
from worker import rollups
from worker.celery_app import app
from worker.retry_policy import MAX_TRANSIENT_RETRIES, transient_delay_s

log = logging.getLogger(__name__)


def _owner(task: Task) -> str:
    # Retries of one message keep its task id, so they may resume their own claim at once.
    return f"{task.request.hostname}/{task.request.id}"


# A hard time limit of twice the lease: a prefork child stuck in a computation (a query queued behind
# a lock, with DATABASE_STATEMENT_TIMEOUT_MS off) is killed and replaced instead of holding its slot
# for ever while its parent still beats for the liveness probe; its lease has long expired and the
# sweeper has sent the summary again. (The threads pool has no time limits; its computations end with
# their statements.) max_retries: Celery's default, 3, would end the retries before retry_policy's
# count and leave the summary in-progress, without the reason, until its lease ran out.
@app.task(name=COMPUTE_SUMMARY, bind=True, acks_late=True, ignore_result=True,
          time_limit=2 * get_settings().summary_lease_s, max_retries=MAX_TRANSIENT_RETRIES)
def compute_summary(self: Task, summary_sid: str) -> None:
    with logs.bind(summary_sid=summary_sid, task_id=self.request.id):
        _compute(self, summary_sid)


def _compute(self: Task, summary_sid: str) -> None:
    owner, settings = _owner(self), get_settings()
    started = time.perf_counter()
    try:
        with autocommit() as connection:  # each statement its own transaction
            summary = claim(connection, summary_sid, owner, settings.summary_lease_s)
            clear_in_flight(summary_sid)
            if summary is None:
                log.info("not claimable: finished, deleted or leased by another worker")
                return
            result = rollups.compute(connection, summary.account_sid, summary.include_subaccounts,
                                     summary.start_date, summary.end_date)
        done = _finish(lambda db: complete(db, summary_sid, owner, result.columns()), bool(summary.status_callback))
    except TRANSIENT_ERRORS as exc:
        if self.request.retries >= MAX_TRANSIENT_RETRIES:
            _fail(summary_sid, owner, f"database unavailable after {self.request.retries} retries: {exc}")
            return
        countdown = transient_delay_s(self.request.retries)
        log.warning("transient database error; retrying in %.1fs", countdown)
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


def _finish(move: Callable[[Connection], Row | None], with_callback: bool) -> Row | None:
    """Run the summary's final move; with a callback, write its delivery in the same transaction (an
    outbox: finished without its callback never happens) and send it once that has committed.
    Without one, the move is a single statement, committed as it runs."""
    if not with_callback:
        with autocommit() as connection:
            return move(connection)
    with get_engine().begin() as connection:
        done = move(connection)
        added = deliveries.add(connection, done, get_settings().callback_max_attempts)
    if added:
        send_committed(enqueue_callback, done.sid)
    return done


def _fail(summary_sid: str, owner: str, reason: str) -> None:
    # Whether the summary has a callback is not known here: always the transaction (a rare path). The
    # reason is an exception's text: a NUL in it would fail the write, and the summary with it, for ever.
    reason = safe(reason)[:2000]
    if _finish(lambda db: fail(db, summary_sid, owner, reason), with_callback=True) is not None:
        metrics.SUMMARIES_FINISHED.labels("failed").inc()
