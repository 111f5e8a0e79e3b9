"""A call moved from a parent to its subaccount carries its feedback entry and its annotation, in
the trigger of the move itself (found by review).

The status callback's statement carried them before (a CTE ahead of the move), with the snapshot it
started with: a post or an annotation update committed while it waited for the call's lock was not
in it, and the move's trigger, which sees everything committed, then deleted it, after it had been
answered 200. The trigger now carries what a move from a parent to its subaccount finds under the
parent (the SPEC's parent-path case, whoever moves the call: a status callback or `calls sync`),
and drops, as before, what any other move finds under another account. CREATE OR REPLACE of the two
functions: the triggers themselves stay, and the previous release's statement (whose CTE carried
first) finds nothing left to carry.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

from shared.migrations.rolling import set_lock_timeout

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

# (table, function): the rows that belong to a call's account.
FOLLOWERS = (("call_feedback", "calls_drop_moved_feedback"), ("call_annotations", "calls_drop_moved_annotation"))


def _function(table: str, name: str, carry: bool) -> str:
    carried = f"""
  IF OLD.provisional AND EXISTS (SELECT 1 FROM accounts WHERE sid = NEW.account_sid AND parent_sid = OLD.account_sid)
  THEN
    UPDATE {table} SET account_sid = NEW.account_sid WHERE call_sid = NEW.sid AND account_sid = OLD.account_sid;
  END IF;""" if carry else ""
    return f"""
CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN{carried}
  DELETE FROM {table} WHERE call_sid = NEW.sid AND account_sid <> NEW.account_sid;
  RETURN NULL;
END $$"""


def upgrade() -> None:
    set_lock_timeout()
    for table, name in FOLLOWERS:
        op.execute(_function(table, name, carry=True))


def downgrade() -> None:
    set_lock_timeout()
    for table, name in FOLLOWERS:
        op.execute(_function(table, name, carry=False))
