"""Rollups without a hot row: writes append deltas, a periodic fold moves them into the daily rows.

Under 0003 every write of an account and day upserted the same `daily_calls` / `daily_feedback`
row and held its lock until commit, so concurrent writers of one account queued behind each other
(pgbench, 64 writers to one account: 0.12 of the rate without upkeep). Now a row-level trigger
appends one narrow row per changed call or feedback entry to an append-only table with no index
(`calls_rollup_deltas`, `feedback_rollup_deltas`): no row is shared, nothing is locked until
commit. `worker/folding.py` folds the deltas into the daily rows in bounded batches (one
`DELETE ... RETURNING` feeding one grouped upsert, in one transaction, under an advisory lock), and
`worker/rollups.py` reads the folded rows plus whatever deltas are still pending, so a summary is
exact at any moment. Why row-level and unindexed: measured in docs/benchmarks.md (issue 13).

Every write path is still covered by the database: the endpoints, both imports, `calls sync`, the
voice status ingest, cascaded deletes, 0006's trigger, an operator's SQL or `\\copy`. An UPDATE
that leaves the counted values as they were (a status callback confirming a call, feedback posted
again unchanged) appends nothing (the triggers' WHEN).

The daily rows are exact when this runs and stay as they are: with the tables locked, no write can
fall between the old triggers and the new. The downgrade folds every pending delta first.

Revision ID: 0007
Revises: 0006
"""

import importlib.util
from pathlib import Path

from alembic import op

from shared.migrations.rolling import set_lock_timeout

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

# Frozen here, as in 0003: the migration must not change when the application's list does.
ISSUES = ("audio-latency", "digits-not-captured", "dropped-call", "imperfect-audio", "incorrect-caller-id",
          "one-way-audio", "post-dial-delay", "unsolicited-call")
FEEDBACK_COLUMNS = [f"score_{n}" for n in range(1, 6)] + ["issue_" + issue.replace("-", "_") for issue in ISSUES]
# A queue table: emptied every second or so, vacuumed after a fixed number of dead rows, not a fraction.
# The fold also vacuums them (worker/folding.py), and the vacuum gives back the empty pages at their
# end, which summaries would otherwise scan (after a million-row import, 5 ms more per summary).
QUEUE_STORAGE = ("WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, "
                 "autovacuum_vacuum_insert_scale_factor = 0, autovacuum_vacuum_insert_threshold = 50000)")


def _day(row: str, column: str) -> str:
    return f"({row}.{column} AT TIME ZONE 'UTC')::date"


CALLS_FUNCTION = f"""
CREATE FUNCTION calls_rollup_delta() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO calls_rollup_deltas VALUES (OLD.account_sid, {_day("OLD", "start_time")}, -1);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO calls_rollup_deltas VALUES (NEW.account_sid, {_day("NEW", "start_time")}, 1);
  END IF;
  RETURN NULL;
END $$"""

# A replacement on the same account and day (the Feedback endpoint's) is one row, old and new values
# together: one insert per write, as for a new entry (measured: two rows cost 10-20 % of the rate).
FEEDBACK_FUNCTION = f"""
CREATE FUNCTION call_feedback_rollup_delta() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.account_sid = NEW.account_sid
     AND {_day("OLD", "date_created")} = {_day("NEW", "date_created")} THEN
    INSERT INTO feedback_rollup_deltas VALUES (NEW.account_sid, {_day("NEW", "date_created")},
                                               NEW.quality_score, NEW.issues, OLD.quality_score, OLD.issues);
    RETURN NULL;
  END IF;
  IF TG_OP <> 'INSERT' THEN
    INSERT INTO feedback_rollup_deltas (account_sid, day, old_quality_score, old_issues)
    VALUES (OLD.account_sid, {_day("OLD", "date_created")}, OLD.quality_score, OLD.issues);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO feedback_rollup_deltas (account_sid, day, quality_score, issues)
    VALUES (NEW.account_sid, {_day("NEW", "date_created")}, NEW.quality_score, NEW.issues);
  END IF;
  RETURN NULL;
END $$"""

# Only changes to what the rollups count append deltas.
CALLS_CHANGED = "OLD.account_sid IS DISTINCT FROM NEW.account_sid OR " \
                f"{_day('OLD', 'start_time')} IS DISTINCT FROM {_day('NEW', 'start_time')}"
FEEDBACK_CHANGED = "(OLD.account_sid, OLD.quality_score, OLD.issues, OLD.date_created) IS DISTINCT FROM " \
                   "(NEW.account_sid, NEW.quality_score, NEW.issues, NEW.date_created)"

# Every pending delta into the daily rows (the downgrade's; worker/folding.py folds in batches).
FOLD_CALLS = """
WITH moved AS (DELETE FROM calls_rollup_deltas RETURNING account_sid, day, calls)
INSERT INTO daily_calls AS d (account_sid, day, calls)
SELECT account_sid, day, sum(calls) FROM moved GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (account_sid, day) DO UPDATE SET calls = d.calls + excluded.calls"""
_FEEDBACK_SUMS = [f"count(*) FILTER (WHERE quality_score = {n}) - count(*) FILTER (WHERE old_quality_score = {n})"
                  for n in range(1, 6)] + \
                 [f"count(*) FILTER (WHERE '{issue}' = ANY(issues)) - count(*) FILTER (WHERE '{issue}' = ANY(old_issues))"
                  for issue in ISSUES]
FOLD_FEEDBACK = f"""
WITH moved AS (DELETE FROM feedback_rollup_deltas RETURNING *)
INSERT INTO daily_feedback AS d (account_sid, day, {", ".join(FEEDBACK_COLUMNS)})
SELECT account_sid, day, {", ".join(_FEEDBACK_SUMS)}
FROM moved GROUP BY 1, 2 ORDER BY 1, 2
ON CONFLICT (account_sid, day) DO UPDATE SET {", ".join(f"{c} = d.{c} + excluded.{c}" for c in FEEDBACK_COLUMNS)}"""


def _revision_0003():
    path = Path(__file__).with_name("0003_daily_rollups.py")
    spec = importlib.util.spec_from_file_location("revision_0003", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    set_lock_timeout()
    op.execute("LOCK TABLE calls, call_feedback IN SHARE ROW EXCLUSIVE MODE")
    op.execute(f"CREATE TABLE calls_rollup_deltas (account_sid varchar(34) NOT NULL, day date NOT NULL, "
               f"calls integer NOT NULL) {QUEUE_STORAGE}")
    # The entry's values after the write (none for a delete) and before it (none for an insert).
    op.execute(f"CREATE TABLE feedback_rollup_deltas (account_sid varchar(34) NOT NULL, day date NOT NULL, "
               f"quality_score smallint, issues text[], old_quality_score smallint, old_issues text[]) {QUEUE_STORAGE}")
    for table in ("calls", "call_feedback"):
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER {table}_rollup_{event} ON {table}")
    op.execute("DROP FUNCTION rollup_calls()")
    op.execute("DROP FUNCTION rollup_call_feedback()")
    # 0003's backfill progress, on installs that applied it in batches: no function reads it now.
    op.execute("DROP TABLE IF EXISTS rollup_backfill")
    op.execute(CALLS_FUNCTION)
    op.execute(FEEDBACK_FUNCTION)
    for table, function, changed in (("calls", "calls_rollup_delta", CALLS_CHANGED),
                                     ("call_feedback", "call_feedback_rollup_delta", FEEDBACK_CHANGED)):
        op.execute(f"CREATE TRIGGER {table}_rollup_write AFTER INSERT OR DELETE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION {function}()")
        op.execute(f"CREATE TRIGGER {table}_rollup_change AFTER UPDATE ON {table} "
                   f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION {function}()")


def downgrade() -> None:
    set_lock_timeout()
    op.execute("LOCK TABLE calls, call_feedback IN SHARE ROW EXCLUSIVE MODE")
    for table in ("calls", "call_feedback"):
        op.execute(f"DROP TRIGGER {table}_rollup_write ON {table}")
        op.execute(f"DROP TRIGGER {table}_rollup_change ON {table}")
    op.execute("DROP FUNCTION calls_rollup_delta()")
    op.execute("DROP FUNCTION call_feedback_rollup_delta()")
    op.execute(FOLD_CALLS)
    op.execute(FOLD_FEEDBACK)
    op.execute("DROP TABLE calls_rollup_deltas")
    op.execute("DROP TABLE feedback_rollup_deltas")
    old = _revision_0003()
    op.execute(old._trigger_function("rollup_calls", old._calls_delta))
    op.execute(old._trigger_function("rollup_call_feedback", old._feedback_delta))
    for statement in old._triggers("calls", "rollup_calls") + old._triggers("call_feedback", "rollup_call_feedback"):
        op.execute(statement)
