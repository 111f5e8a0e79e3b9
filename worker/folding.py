"""Folding the rollup deltas into the daily rows (migration 0007), every second from the scheduler.

Each batch is one transaction: `DELETE ... RETURNING` a bounded set of delta rows, grouped by
account and day, added to the daily rows by one upsert. A delta is therefore in the daily rows or
in the delta table, never both and never neither, at any snapshot: `worker/rollups.py` reads both
and is exact whether or not a fold ran. Only deltas committed before the batch's statement are
seen, so rows written meanwhile wait for the next batch. A transaction-level advisory lock lets one
folder run at a time (two schedulers, or beat and a manual run): the other returns at once. The
daily rows are upserted in key order, so even without the lock two folders could not deadlock.
"""

from __future__ import annotations

import logging

from psycopg.errors import LockNotAvailable
from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from shared.platform.db import error_line, get_engine, lift_statement_timeout, statement_cancelled, untimed_autocommit
from worker.celery_app import app
from worker.rollups import FEEDBACK_COLUMNS, FEEDBACK_DELTA_SUMS
from worker.tasks import Task

log = logging.getLogger(__name__)

FOLD = "summaries.fold_rollups"
BATCH_ROWS = 50_000
MAX_BATCHES = 20  # per run: a backlog (an import of millions) is worked off over a few runs
LOCK_KEY = 0x7C0F_0007  # pg_advisory_xact_lock key, shared by every folder
# A batch waiting this long for a daily row's lock (an operator's LOCK TABLE, a long transaction on
# the rows) gives up until the next run, a second later: it held a worker slot for as long before.
LOCK_TIMEOUT = "5s"


def _batch(table: str, columns: str) -> str:
    # A TID scan of rows seen by this statement's snapshot; without an index, the cheapest bound.
    return f"""WITH moved AS (
    DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} LIMIT :limit)) RETURNING {columns})"""


FOLD_CALLS = text(_batch("calls_rollup_deltas", "account_sid, day, calls") + """
, folded AS (
    INSERT INTO daily_calls AS d (account_sid, day, calls)
    SELECT account_sid, day, sum(calls) FROM moved GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (account_sid, day) DO UPDATE SET calls = d.calls + excluded.calls)
SELECT count(*) FROM moved""")
FOLD_FEEDBACK = text(_batch("feedback_rollup_deltas", "*") + f"""
, folded AS (
    INSERT INTO daily_feedback AS d (account_sid, day, {", ".join(FEEDBACK_COLUMNS)})
    SELECT account_sid, day, {", ".join(FEEDBACK_DELTA_SUMS)}
    FROM moved GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (account_sid, day) DO UPDATE SET {", ".join(f"{c} = d.{c} + excluded.{c}" for c in FEEDBACK_COLUMNS)})
SELECT count(*) FROM moved""")


def fold_batch(connection: Connection, limit: int = BATCH_ROWS) -> int | None:
    """Fold up to `limit` rows of each delta table in the caller's transaction; the rows folded,
    or None when another folder holds the lock (then nothing is done)."""
    if not connection.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": LOCK_KEY}):
        return None
    # A backlog's batch (an import of millions) may take seconds; the process's timeout is a request's.
    lift_statement_timeout(connection, LOCK_TIMEOUT)
    moved = connection.scalar(FOLD_CALLS, {"limit": limit})
    return moved + connection.scalar(FOLD_FEEDBACK, {"limit": limit})


def fold(limit: int = BATCH_ROWS, max_batches: int = MAX_BATCHES) -> int:
    """Fold pending deltas, a batch per transaction, until a batch comes back short."""
    total = 0
    for _ in range(max_batches):
        try:
            with get_engine().begin() as connection:
                moved = fold_batch(connection, limit)
        except OperationalError as error:
            if not isinstance(error.orig, LockNotAvailable):
                raise
            log.warning("fold waited %s for a lock on the rollups and stopped; the next run goes on", LOCK_TIMEOUT)
            break
        if moved is None:
            break
        total += moved
        if moved < limit:  # both tables had fewer than `limit` pending: caught up
            break
    if total:
        _vacuum()
    return total


def _vacuum() -> None:
    """Summaries scan the delta tables (they have no index): their dead rows go now, not at
    autovacuum's next visit (a minute away, by then hundreds of thousands of rows at full load).
    Without the statement timeout this process sets; a role's (behind PgBouncer) may still cut it
    after a large backlog: the folded rows are committed, the pages it cleaned stay clean, and the
    next fold's VACUUM or autovacuum does the rest."""
    try:
        with untimed_autocommit() as connection:
            connection.execute(text("VACUUM (SKIP_LOCKED) calls_rollup_deltas, feedback_rollup_deltas"))
    except OperationalError as error:
        if not statement_cancelled(error):
            raise
        log.warning("VACUUM of the rollup deltas cut short by a statement_timeout; the next one goes on (%s)",
                    error_line(error))


# The next run, a second later, is the retry of a transient error (transient_retries = 0).
@app.task(name=FOLD, base=Task, acks_late=True, ignore_result=True, transient_retries=0)
def fold_rollups() -> int:
    moved = fold()
    if moved:
        log.debug("rollup deltas folded", extra={"rows": moved})
    return moved
