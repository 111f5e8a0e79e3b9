"""One engine per process, made on first use from DATABASE_URL or the embedded server."""

from __future__ import annotations

import functools

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared import embedded
from shared.config import Settings, get_settings


def sqlalchemy_url(url: str) -> str:
    """Accept the usual `postgres://` and `postgresql://` spellings; always drive with psycopg 3."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded.postgres_url(settings.data_dir)


def make_engine(url: str) -> Engine:
    return create_engine(
        sqlalchemy_url(url),
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        pool_timeout=5,
        connect_args={"connect_timeout": 5, "application_name": "call-feedback-summaries"},
    )


@functools.cache
def get_engine() -> Engine:
    return make_engine(database_url(get_settings()))


@functools.cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)
