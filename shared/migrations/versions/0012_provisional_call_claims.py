"""Who else claimed a provisional call (issue 21, found by review): the account whose signed status
event named a call while another account held it as provisional (a feedback post under the wrong
account, or a stranger's post on a call SID it learnt). The event took nothing then, and when the
grace ended the call was deleted: its owner lost it. Now the claim is kept, and the call goes to the
claimant when the grace ends unconfirmed (shared/calls/provisional.py).

Two nullable columns without a default: a change of the catalog only, no table rewrite; the
previous release never reads or writes them.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations.rolling import set_lock_timeout

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    set_lock_timeout()
    op.add_column("calls", sa.Column("claimed_by", sa.String(34), sa.ForeignKey("accounts.sid", ondelete="SET NULL"),
                                     nullable=True))
    op.add_column("calls", sa.Column("claimed_start_time", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    set_lock_timeout()
    op.drop_column("calls", "claimed_start_time")
    op.drop_column("calls", "claimed_by")
