"""compute_summary: claim, aggregate in PostgreSQL, store `completed` (with its callback's delivery)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, Row

from shared.callbacks import deliveries
from shared.platform import metrics
from shared.platform.config import get_settings
from shared.platform.db import TRANSIENT_ERRORS, autocommit, get_engine
from shared.platform.queue import COMPUTE_SUMMARY, clear_in_flight
from shared.safe_text import safe
from shared.summaries.lifecycle import claim, complete, fail
from worker import rollups
from worker.celery_app import app
from worker.tasks import Task

log = logging.getLogger(__name__)


def _owner(task: Task) -> str:
    # Retries of one message keep its task id, so they may resume their own claim at once.
    return f"{task.request.hostname}/{task.request.id}"


def _retries_exhausted(self, exc: Exception, summary_sid: str) -> None:
    _fail(summary_sid, _owner(self), f"database unavailable after {self.request.retries} retries: {exc}")


# A hard time limit of twice the lease: a prefork child stuck in a computation (a query queued behind
# a lock, with DATABASE_STATEMENT_TIMEOUT_MS off) is killed and replaced instead of holding its slot
# for ever while its parent still beats for the liveness probe; its lease has long expired and the
# sweeper has sent the summary again. (The threads pool has no time limits; its computations end with
# their statements.) A transient database error is retried by the base (worker/tasks.py); after the
# last retry the summary fails with the reason, rather than wait in-progress for its lease to run out.
@app.task(name=COMPUTE_SUMMARY, base=Task, bind=True, acks_late=True, ignore_result=True,
          time_limit=2 * get_settings().summary_lease_s, about_a_summary=True,
          on_retries_exhausted=_retries_exhausted)
def compute_summary(self: Task, summary_sid: str) -> None:
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
    except TRANSIENT_ERRORS:
        raise  # the base's to retry
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
        outgoing = deliveries.add(connection, done, get_settings().callback_max_attempts)
    if outgoing is not None:
        outgoing()
    return done


def _fail(summary_sid: str, owner: str, reason: str) -> None:
    # Whether the summary has a callback is not known here: always the transaction (a rare path). The
    # reason is an exception's text: a NUL in it would fail the write, and the summary with it, for ever.
    reason = safe(reason)[:2000]
    if _finish(lambda db: fail(db, summary_sid, owner, reason), with_callback=True) is not None:
        metrics.SUMMARIES_FINISHED.labels("failed").inc()
