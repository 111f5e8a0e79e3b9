"""Alembic environment: the URL comes from the caller (cli.migrate) or from the settings."""

from alembic import context
from sqlalchemy import create_engine, pool

from shared import models
from shared.platform.config import get_settings
from shared.platform.db import connect_args, database_url, sqlalchemy_url

url = context.config.get_main_option("sqlalchemy.url") or database_url(get_settings())
# Not written back into the config: its parser treats the '%' of an escaped socket path as syntax.
# DATABASE_PREPARED_STATEMENTS applies here too: a migration may run through PgBouncer.
engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool, connect_args=connect_args(get_settings()))
with engine.connect() as connection:
    # One transaction per revision: its locks go with its commit, and a revision that gave up on a lock
    # (shared/migrations/rolling.py) is tried again from where the run stopped.
    context.configure(connection=connection, target_metadata=models.Base.metadata, compare_type=True,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
