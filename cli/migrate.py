"""Apply the Alembic migrations: `summaries migrate`, the Procfile's release step, and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import shared

# The revisions live beside the schema they change (shared/models.py); only this command applies them.
MIGRATIONS_DIR = Path(shared.__file__).parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
