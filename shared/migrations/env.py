"""Alembic environment: the URL comes from the caller (shared.migrate) or from the settings."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from shared import models
from shared.config import get_settings
from shared.db import database_url, sqlalchemy_url

config = context.config
url = config.get_main_option("sqlalchemy.url") or database_url(get_settings())
config.set_main_option("sqlalchemy.url", sqlalchemy_url(url))

engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=models.Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
