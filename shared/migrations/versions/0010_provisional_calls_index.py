"""An index of the provisional calls, for their expiry (issue 21): the sweeper finds the ones no
call source confirmed within PROVISIONAL_CALL_GRACE_S among a handful, not among every call.

Partial (`WHERE provisional`): a few rows, whatever the table holds. Built CONCURRENTLY, outside a
transaction, so the calls table takes writes (status callbacks, feedback) while it is built; a
build cut short leaves an invalid index, which the next run drops and builds again.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

from shared.migrations.rolling import outside_a_transaction, set_lock_timeout

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "calls_provisional_start_time"


def upgrade() -> None:
    set_lock_timeout()
    invalid = op.get_bind().exec_driver_sql(
        "SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relname = '{INDEX}' AND NOT i.indisvalid").first()
    outside_a_transaction(*([f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}"] if invalid else []),
                           f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON calls (start_time) WHERE provisional")


def downgrade() -> None:
    set_lock_timeout()
    outside_a_transaction(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
