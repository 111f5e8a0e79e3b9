"""Auth tokens at rest: hashed and encrypted, never plaintext; room for a secondary token.

Existing tokens are converted in place with the configured key (AUTH_TOKEN_KEYS, or the data
directory's key file), in batches. The plaintext column stays, nullable, because the previous
release still reads it while a deploy rolls (this release writes none); 0009 drops it in the
release after, and rewrites the table so that no copy is left in its files.

(Installs that applied this revision before issue 15 had the column dropped here, at once: the
previous release's processes failed until they were replaced, and the tokens stayed in the table's
files. 0009 drops the column only if it exists, and rewrites the table for them too.)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from shared.migrations.rolling import in_batches, set_lock_timeout

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

CONVERT = sa.text("UPDATE accounts SET auth_token_hash = :h, auth_token_encrypted = :e WHERE sid = :sid")
UNCONVERTED = "SELECT sid, auth_token FROM accounts WHERE auth_token_hash IS NULL ORDER BY sid"


def _convert(connection, rows) -> None:
    from shared.accounts.secrets import encrypt, token_hash

    if rows:
        connection.execute(CONVERT, [{"h": token_hash(token), "e": encrypt(token), "sid": sid} for sid, token in rows])


def _batch(connection, size: int) -> bool:
    rows = connection.execute(sa.text(f"{UNCONVERTED} LIMIT :n FOR UPDATE"), {"n": size}).all()
    _convert(connection, rows)
    return len(rows) == size


def upgrade() -> None:
    set_lock_timeout()
    # IF NOT EXISTS: a run cut short after this committed goes on from where it stopped.
    op.execute("ALTER TABLE accounts ADD COLUMN IF NOT EXISTS auth_token_hash varchar(64), "
               "ADD COLUMN IF NOT EXISTS auth_token_encrypted text, "
               "ADD COLUMN IF NOT EXISTS secondary_token_hash varchar(64), "
               "ADD COLUMN IF NOT EXISTS secondary_token_encrypted text, "
               "ALTER COLUMN auth_token DROP NOT NULL")
    in_batches(_batch)
    set_lock_timeout()
    # Accounts the previous release created meanwhile, with writes held off until the constraints hold.
    op.execute("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE")
    connection = op.get_bind()
    _convert(connection, connection.execute(sa.text(UNCONVERTED)).all())
    op.alter_column("accounts", "auth_token_hash", nullable=False)
    op.alter_column("accounts", "auth_token_encrypted", nullable=False)


def downgrade() -> None:
    from shared.accounts.secrets import decrypt

    set_lock_timeout()
    op.execute("ALTER TABLE accounts ADD COLUMN IF NOT EXISTS auth_token varchar(32)")
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT sid, auth_token_encrypted FROM accounts WHERE auth_token IS NULL")).all()
    for sid, ciphertext in rows:
        connection.execute(sa.text("UPDATE accounts SET auth_token = :t WHERE sid = :sid"),
                           {"t": decrypt(ciphertext), "sid": sid})
    op.alter_column("accounts", "auth_token", nullable=False)
    for column in ("secondary_token_encrypted", "secondary_token_hash", "auth_token_encrypted", "auth_token_hash"):
        op.drop_column("accounts", column)
