"""Feedback follows its call's owner through a row-level trigger that fires only on a move (issue 13).

0006's trigger was statement-level, `AFTER UPDATE ... REFERENCING NEW TABLE`: PostgreSQL fires an
UPDATE statement trigger for every `INSERT ... ON CONFLICT DO UPDATE`, even when no row conflicted,
so each call the voice status ingest recorded paid for a transition table, a PL/pgSQL call and a
`DELETE ... USING` the empty table: 17 µs of backend CPU per ingest against 30 µs for the insert
itself (docs/benchmarks.md, issue 13), the largest part of what call ingest paid over a table with
no triggers. Now a row-level trigger with `WHEN (OLD.account_sid IS DISTINCT FROM NEW.account_sid)`:
the insert arm fires no UPDATE row trigger, and the update arm evaluates the WHEN and calls nothing
unless the call changed account, which is when 0006 had anything to delete. Feedback's account is
its call's (the API writes it so; this trigger keeps it so on moves), so the same rows go.

Dropping and creating the trigger in one transaction: no write falls between the two.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

from shared.migrations.rolling import set_lock_timeout

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_lock_timeout()
    op.execute("""
CREATE FUNCTION calls_drop_moved_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM call_feedback WHERE call_sid = NEW.sid AND account_sid <> NEW.account_sid;
  RETURN NULL;
END $$""")
    op.execute("DROP TRIGGER calls_feedback_follows_owner ON calls")
    op.execute("CREATE TRIGGER calls_feedback_follows_owner AFTER UPDATE ON calls FOR EACH ROW "
               "WHEN (OLD.account_sid IS DISTINCT FROM NEW.account_sid) EXECUTE FUNCTION calls_drop_moved_feedback()")
    op.execute("DROP FUNCTION calls_drop_foreign_feedback()")


def downgrade() -> None:
    set_lock_timeout()
    op.execute("""
CREATE FUNCTION calls_drop_foreign_feedback() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM call_feedback f USING new_rows n WHERE f.call_sid = n.sid AND f.account_sid <> n.account_sid;
  RETURN NULL;
END $$""")
    op.execute("DROP TRIGGER calls_feedback_follows_owner ON calls")
    op.execute("CREATE TRIGGER calls_feedback_follows_owner AFTER UPDATE ON calls REFERENCING NEW TABLE AS new_rows "
               "FOR EACH STATEMENT EXECUTE FUNCTION calls_drop_foreign_feedback()")
    op.execute("DROP FUNCTION calls_drop_moved_feedback()")
