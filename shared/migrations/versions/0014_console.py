"""The operators' console (issue 23): its users, its sign-in failures, when each account's last voice
status callback arrived, an hourly cache for its charts, and the indexes its pages read by.

New tables only, and indexes built CONCURRENTLY outside a transaction (as 0010 does): the previous
release never sees the tables and keeps writing the indexed ones while they are built. A build cut
short leaves an invalid index, which the next run drops and builds again.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

from shared.migrations.rolling import outside_a_transaction, set_lock_timeout

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# name: (table, what), each read by a page of the console (console/queries.py says which).
INDEXES = {
    # Summaries newest first, all or by status (keyset on date_created, sid).
    "feedback_summaries_created": ("feedback_summaries", "(date_created, sid)"),
    "feedback_summaries_status_created": ("feedback_summaries", "(status, date_created, sid)"),
    # Deliveries most recently changed first, all or by host (by state: callback_deliveries_state_updated).
    "callback_deliveries_updated": ("callback_deliveries", "(date_updated, summary_sid)"),
    "callback_deliveries_host_updated": ("callback_deliveries", "(host, date_updated)"),
    # The charts' hours: events and attempts by time, read from the index alone.
    "summary_events_at": ("summary_events", "(at, kind)"),
    "callback_attempts_attempted_at": ("callback_attempts", "(attempted_at) INCLUDE (outcome, summary_sid)"),
}

TABLES = """
CREATE TABLE console_users (
    name text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 64),
    role text NOT NULL CHECK (role IN ('viewer', 'operator')),
    password_hash text,  -- NULL: signs in only through the trusted proxy's header
    -- In every session cookie of the user; a new one (sign-out, re-creation) ends them all.
    session_key text NOT NULL DEFAULT gen_random_uuid()::text,
    date_created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE console_sign_in_failures (
    key text PRIMARY KEY,
    failures integer NOT NULL,
    window_started timestamptz NOT NULL
);
CREATE TABLE account_activity (
    account_sid varchar(34) PRIMARY KEY REFERENCES accounts (sid) ON DELETE CASCADE,
    last_voice_status_at timestamptz NOT NULL
);
CREATE TABLE console_chart_hours (
    hour timestamptz NOT NULL,
    metric text NOT NULL,
    value double precision,
    PRIMARY KEY (hour, metric)
);
CREATE TABLE console_host_hours (
    hour timestamptz NOT NULL,
    host text NOT NULL,
    delivered integer NOT NULL,
    retry integer NOT NULL,
    failed integer NOT NULL,
    PRIMARY KEY (hour, host)
);
"""


def upgrade() -> None:
    set_lock_timeout()
    op.execute(TABLES)
    invalid = {name for (name,) in op.get_bind().exec_driver_sql(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid")}
    statements = []
    for name, (table, what) in INDEXES.items():
        if name in invalid:
            statements.append(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        statements.append(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} {what}")
    outside_a_transaction(*statements)


def downgrade() -> None:
    set_lock_timeout()
    outside_a_transaction(*(f"DROP INDEX CONCURRENTLY IF EXISTS {name}" for name in INDEXES))
    op.execute("DROP TABLE console_host_hours, console_chart_hours, account_activity, console_sign_in_failures, "
               "console_users")
