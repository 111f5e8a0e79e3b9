"""Auth tokens at rest: hashed and encrypted, never plaintext; room for a secondary token.

Existing tokens are converted in place with the configured key (AUTH_TOKEN_KEYS, or the data
directory's key file), then the plaintext column is dropped.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from shared.accounts.secrets import encrypt, token_hash

    op.add_column("accounts", sa.Column("auth_token_hash", sa.String(length=64), nullable=True))
    op.add_column("accounts", sa.Column("auth_token_encrypted", sa.Text(), nullable=True))
    op.add_column("accounts", sa.Column("secondary_token_hash", sa.String(length=64), nullable=True))
    op.add_column("accounts", sa.Column("secondary_token_encrypted", sa.Text(), nullable=True))
    connection = op.get_bind()
    accounts = connection.execute(sa.text("SELECT sid, auth_token FROM accounts")).all()
    for sid, token in accounts:
        connection.execute(sa.text("UPDATE accounts SET auth_token_hash = :h, auth_token_encrypted = :e "
                                   "WHERE sid = :sid"), {"h": token_hash(token), "e": encrypt(token), "sid": sid})
    op.alter_column("accounts", "auth_token_hash", nullable=False)
    op.alter_column("accounts", "auth_token_encrypted", nullable=False)
    op.drop_column("accounts", "auth_token")


def downgrade() -> None:
    from shared.accounts.secrets import decrypt

    op.add_column("accounts", sa.Column("auth_token", sa.String(length=32), nullable=True))
    connection = op.get_bind()
    for sid, ciphertext in connection.execute(sa.text("SELECT sid, auth_token_encrypted FROM accounts")).all():
        connection.execute(sa.text("UPDATE accounts SET auth_token = :t WHERE sid = :sid"),
                           {"t": decrypt(ciphertext), "sid": sid})
    op.alter_column("accounts", "auth_token", nullable=False)
    for column in ("secondary_token_encrypted", "secondary_token_hash", "auth_token_encrypted", "auth_token_hash"):
        op.drop_column("accounts", column)
