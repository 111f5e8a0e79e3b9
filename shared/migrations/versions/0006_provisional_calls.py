"""Calls first known from their feedback (provisional), and feedback that follows its call's owner.

A feedback post may come before Twilio's status callback for its call: the call is recorded then
as provisional, under the account of the post, and the status callback (or a sync from Twilio)
confirms it. Should Twilio say the call belongs to another account, the call moves there and the
feedback posted under the wrong account is dropped: a trigger on `calls` keeps every feedback row's
account equal to its call's, whatever writes the move (the ingest, a sync, an operator's SQL).

Adding a column with a constant default rewrites nothing (PostgreSQL 11+); the lock is brief.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations.rolling import set_lock_timeout

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_lock_timeout()
    op.add_column('calls', sa.Column('provisional', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.execute("""
CREATE FUNCTION calls_drop_foreign_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM call_feedback f USING new_rows n WHERE f.call_sid = n.sid AND f.account_sid <> n.account_sid;
  RETURN NULL;
END $$""")
    op.execute("CREATE TRIGGER calls_feedback_follows_owner AFTER UPDATE ON calls REFERENCING NEW TABLE AS new_rows "
               "FOR EACH STATEMENT EXECUTE FUNCTION calls_drop_foreign_feedback()")


def downgrade() -> None:
    set_lock_timeout()
    op.execute("DROP TRIGGER calls_feedback_follows_owner ON calls")
    op.execute("DROP FUNCTION calls_drop_foreign_feedback()")
    op.drop_column('calls', 'provisional')
