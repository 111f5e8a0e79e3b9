"""The contract of 0005: the plaintext auth tokens go, from the table and from its files.

A contract revision (shared/migrations/rolling.py): `summaries migrate` applies it only when asked
(`--contract`, once no process of the release before 0005 runs) or on an empty database. The last
revision of the chain, so that no later revision waits behind it (revision 0008 came from the same
release and was ordered before it).

`DROP COLUMN` only hides the column: every row keeps its bytes until rewritten. `VACUUM FULL`
rewrites the table (dropped columns' values become nulls) into new files and deletes the old ones,
holding an ACCESS EXCLUSIVE lock on `accounts` while it copies (milliseconds for thousands of
accounts). It runs whether this install dropped the column here or, before issue 15, in 0005.
What it cannot reach: the WAL already written, base backups, replicas' own files, dumps, and the
disk blocks the old files occupied. Hence the advice to rotate every token (README, Upgrading).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations.rolling import lock_timeout, set_lock_timeout

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
contracts = "0005"


def upgrade() -> None:
    set_lock_timeout()
    op.execute("ALTER TABLE accounts DROP COLUMN IF EXISTS auth_token")
    with op.get_context().autocommit_block():  # VACUUM runs outside a transaction
        op.execute(f"SET lock_timeout = '{lock_timeout()}'")
        op.execute("SET statement_timeout = 0")  # as set_lock_timeout() does, for a session
        op.execute("VACUUM (FULL) accounts")
        op.execute("RESET statement_timeout")
        op.execute("RESET lock_timeout")


def downgrade() -> None:
    from shared.accounts.secrets import decrypt

    set_lock_timeout()
    op.execute("ALTER TABLE accounts ADD COLUMN auth_token varchar(32)")
    connection = op.get_bind()
    for sid, ciphertext in connection.execute(sa.text("SELECT sid, auth_token_encrypted FROM accounts")).all():
        connection.execute(sa.text("UPDATE accounts SET auth_token = :t WHERE sid = :sid"),
                           {"t": decrypt(ciphertext), "sid": sid})
