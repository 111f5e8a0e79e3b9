"""Exact per-account, per-UTC-day rollups of calls and feedback, kept in step by triggers.

Statement-level triggers with transition tables: one grouped upsert per statement, whether it
wrote one row (the Feedback endpoint) or a million (an import). Every write path is covered,
including ON CONFLICT DO UPDATE (which fires the UPDATE trigger with the old and new rows) and
deletes cascaded from calls. Rows are upserted in key order so that concurrent writers lock them
in the same order and cannot deadlock.

Applied while the previous release writes (issue 15): the triggers come first, then the rows
already there are counted in batches, in key order, each batch committed on its own; no table lock
is held across the backfill. `rollup_backfill` says, per table, up to which key the daily rows
count it (`upto`); until the backfill is `done` the triggers count only changes to rows at or below
that key, and the backfill counts each later key range as it stands when the batch runs. A batch
takes the progress row FOR UPDATE, a trigger FOR SHARE: a batch waits for every writer whose
trigger saw the old `upto` to commit (so it sees their rows), and a writer whose trigger comes
after the batch sees the new `upto` (and counts what the batch could not see). Each row is counted
once, whatever was inserted, replaced or deleted meanwhile. Then the triggers become the plain
ones above. (Installs that applied this revision before did it under a table lock; same result.)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 11:05:53.975794
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations.rolling import in_batches, set_lock_timeout

# Frozen here, as the migration must not change when the application's list does.
ISSUES = ("audio-latency", "digits-not-captured", "dropped-call", "imperfect-audio", "incorrect-caller-id",
          "one-way-audio", "post-dial-delay", "unsolicited-call")
ISSUE_COLUMNS = {issue: "issue_" + issue.replace("-", "_") for issue in ISSUES}
FEEDBACK_COLUMNS = [f"score_{n}" for n in range(1, 6)] + list(ISSUE_COLUMNS.values())


def _calls_delta(rows: str, sign: str) -> str:
    return f"""
    INSERT INTO daily_calls AS d (account_sid, day, calls)
    SELECT account_sid, (start_time AT TIME ZONE 'UTC')::date, {sign}count(*)
    FROM {rows} GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (account_sid, day) DO UPDATE SET calls = d.calls + excluded.calls;"""


def _feedback_delta(rows: str, sign: str) -> str:
    counts = [f"{sign}count(*) FILTER (WHERE quality_score = {n})" for n in range(1, 6)]
    counts += [f"{sign}count(*) FILTER (WHERE '{issue}' = ANY(issues))" for issue in ISSUES]
    updates = ", ".join(f"{c} = d.{c} + excluded.{c}" for c in FEEDBACK_COLUMNS)
    return f"""
    INSERT INTO daily_feedback AS d (account_sid, day, {", ".join(FEEDBACK_COLUMNS)})
    SELECT account_sid, (date_created AT TIME ZONE 'UTC')::date, {", ".join(counts)}
    FROM {rows} GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (account_sid, day) DO UPDATE SET {updates};"""


def _trigger_function(name: str, delta, replace: bool = False) -> str:
    return f"""
CREATE {"OR REPLACE " if replace else ""}FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('DELETE', 'UPDATE') THEN{delta("old_rows", "-")}
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN{delta("new_rows", "")}
  END IF;
  RETURN NULL;
END $$;"""


KEYS = {"calls": "sid", "call_feedback": "call_sid"}


def _backfilling_function(name: str, delta, table: str) -> str:
    """The trigger function while the backfill runs: only rows the daily rows already count."""
    def counted(rows: str, sign: str) -> str:
        return delta(f"(SELECT * FROM {rows} WHERE v_done OR {KEYS[table]} <= v_upto) AS {rows}", sign)

    return f"""
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE v_upto text; v_done boolean;
BEGIN
  SELECT b.upto, b.done INTO v_upto, v_done FROM rollup_backfill b WHERE b.table_name = '{table}' FOR SHARE;
  IF TG_OP IN ('DELETE', 'UPDATE') THEN{counted("old_rows", "-")}
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN{counted("new_rows", "")}
  END IF;
  RETURN NULL;
END $$;"""


def _backfill(table: str, delta):
    key = KEYS[table]

    def step(connection, size: int) -> bool:
        upto, done = connection.execute(sa.text("SELECT upto, done FROM rollup_backfill WHERE table_name = :t "
                                                "FOR UPDATE"), {"t": table}).one()
        if done:
            return False
        last = connection.execute(sa.text(f"SELECT max(k) FROM (SELECT {key} AS k FROM {table} WHERE {key} > :upto "
                                          f"ORDER BY {key} LIMIT :n) b"), {"upto": upto, "n": size}).scalar()
        if last is None:
            connection.execute(sa.text("UPDATE rollup_backfill SET done = true WHERE table_name = :t"), {"t": table})
            return False
        connection.execute(sa.text(delta(f"(SELECT * FROM {table} WHERE {key} > :upto AND {key} <= :last) AS batch",
                                         "")), {"upto": upto, "last": last})
        connection.execute(sa.text("UPDATE rollup_backfill SET upto = :last WHERE table_name = :t"),
                           {"last": last, "t": table})
        return True

    return step


def _triggers(table: str, function: str) -> list[str]:
    # A trigger with transition tables serves one event, hence three.
    return [
        f"CREATE TRIGGER {table}_rollup_insert AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_rollup_update AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
        f"CREATE TRIGGER {table}_rollup_delete AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()",
    ]


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_lock_timeout()
    started = op.get_bind().execute(sa.text("SELECT to_regclass('rollup_backfill')")).scalar()
    if started is None:  # else a run cut short: its batches are committed, go on from there
        _create()
    in_batches(_backfill("calls", _calls_delta))
    in_batches(_backfill("call_feedback", _feedback_delta))
    set_lock_timeout()
    # The plain functions, as installs that applied this revision under a table lock have them.
    # rollup_backfill stays until 0007 drops it: a writer may still be running the function above.
    op.execute(_trigger_function("rollup_calls", _calls_delta, replace=True))
    op.execute(_trigger_function("rollup_call_feedback", _feedback_delta, replace=True))


def _create() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table('daily_calls',
    sa.Column('account_sid', sa.String(length=34), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('calls', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('account_sid', 'day')
    )
    op.create_table('daily_feedback',
    sa.Column('account_sid', sa.String(length=34), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('score_1', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('score_2', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('score_3', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('score_4', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('score_5', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_audio_latency', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_digits_not_captured', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_dropped_call', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_imperfect_audio', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_incorrect_caller_id', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_one_way_audio', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_post_dial_delay', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('issue_unsolicited_call', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('account_sid', 'day')
    )
    # ### end Alembic commands ###
    op.execute("CREATE TABLE rollup_backfill (table_name text PRIMARY KEY, upto text NOT NULL, "
               "done boolean NOT NULL)")
    op.execute("INSERT INTO rollup_backfill VALUES ('calls', '', false), ('call_feedback', '', false)")
    op.execute(_backfilling_function("rollup_calls", _calls_delta, "calls"))
    op.execute(_backfilling_function("rollup_call_feedback", _feedback_delta, "call_feedback"))
    for statement in _triggers("calls", "rollup_calls") + _triggers("call_feedback", "rollup_call_feedback"):
        op.execute(statement)


def downgrade() -> None:
    set_lock_timeout()
    op.execute("DROP TABLE IF EXISTS rollup_backfill")
    for table in ("calls", "call_feedback"):
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER {table}_rollup_{event} ON {table}")
    op.execute("DROP FUNCTION rollup_calls()")
    op.execute("DROP FUNCTION rollup_call_feedback()")
    # ### commands auto generated by Alembic - please adjust! ###
    op.drop_table('daily_feedback')
    op.drop_table('daily_calls')
    # ### end Alembic commands ###
