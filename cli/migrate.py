"""Apply the Alembic migrations: `summaries migrate`, the Procfile's release step, and the tests.

Made for a rolling deploy (shared/migrations/rolling.py): every revision gives up on a lock it
cannot get within `lock_timeout`, and is tried again here after a pause, a few times, before the
command fails; a contract revision waits for a run after the one that applied what it contracts.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.errors import LockNotAvailable
from sqlalchemy import create_engine, pool, text
from sqlalchemy.exc import OperationalError

import shared
from shared.errors import MigrationBlocked
from shared.migrations.rolling import UNLIMITED
from shared.platform.config import get_settings
from shared.platform.db import database_url, error_line, sqlalchemy_url

# The revisions live beside the schema they change (shared/models.py); only this command applies them.
MIGRATIONS_DIR = Path(shared.__file__).parent / "migrations"
LOCK_TIMEOUT = "5s"
ATTEMPTS = 5
BACKOFF_S = 2.0
MIGRATE_LOCK = 0x7C0F_0015  # pg_advisory_xact_lock key of `summaries migrate`
DURATION = re.compile(r"[1-9][0-9]*(ms|s)")

log = logging.getLogger("summaries.migrate")


def alembic_config(url: str | None = None, lock_timeout: str = LOCK_TIMEOUT, batch_size: int | None = None) -> Config:
    if not DURATION.fullmatch(lock_timeout):
        raise ValueError(f"lock timeout {lock_timeout!r}: a whole number of ms or s, as 500ms or 5s")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["lock_timeout"] = lock_timeout
    if batch_size:
        config.attributes["batch_size"] = batch_size
    return config


def _direct_engine(url: str | None):
    return create_engine(sqlalchemy_url(url or database_url(get_settings())), poolclass=pool.NullPool)


def _revision_on(connection) -> str | None:
    revision = MigrationContext.configure(connection).get_current_revision()
    # Alembic's look at the catalog leaves a snapshot registered on the connection (its xmin shows in
    # pg_stat_activity) until the next statement. On the lock connection, idle in its transaction for
    # the whole run, that snapshot made CREATE INDEX CONCURRENTLY (0010) wait for it until its lock
    # timeout, on every fresh database: one more statement lets it go.
    connection.exec_driver_sql("SELECT 1")
    return revision


def not_contracts(deferred: list[str]) -> list[str]:
    """Of the revisions a run left, those that are not contract revisions: they wait only because
    they come after one in the chain, and this release's code needs them."""
    script = ScriptDirectory.from_config(alembic_config())
    return [name for name in deferred if not getattr(script.get_revision(name).module, "contracts", None)]


def current_revision(url: str | None) -> str | None:
    engine = _direct_engine(url)
    try:
        with engine.connect() as connection:
            return _revision_on(connection)
    finally:
        engine.dispose()


def plan(config: Config, current: str | None, target: str = "head", contract: bool = False) -> tuple[str, list[str]]:
    """How far this run goes, and the contract revisions it leaves for a later run (in order).

    A contract revision removes what the release before its `contracts` revision still uses. Only
    an operator knows that no process of that release runs any more (a second migrate, a retried
    release step or another machine's proves nothing), so it is applied only when asked
    (`contract`: `summaries migrate --contract` once the rollout is complete) or on an empty
    database, where no old release can run."""
    script = ScriptDirectory.from_config(config)
    chain = [s for s in reversed(list(script.walk_revisions()))]  # base first; the chain is linear
    names = [s.revision for s in chain]
    end = len(chain) - 1 if target == "head" else names.index(script.get_revision(target).revision)
    start = names.index(current) + 1 if current else 0
    if current is None or contract:
        return names[end], []
    for index in range(start, end + 1):
        if getattr(chain[index].module, "contracts", None):
            return (names[index - 1] if index else "base"), names[index:end + 1]
    return names[end], []


@contextmanager
def one_at_a_time(url: str | None):
    """Hold the migrations' advisory lock while the block runs: two `summaries migrate` at once (two
    machines' release steps, a retried deploy) take turns, and the second plans from what the first
    left. A transaction-level lock held by an open transaction on a connection of its own, so that
    it also holds through a transaction-mode PgBouncer. Yields that connection: each statement on it
    sees what the revisions committed so far (read committed), so it reads where the database is."""
    engine = _direct_engine(url)
    try:
        with engine.connect() as connection, connection.begin():
            # Idle in this transaction for the whole run, and maybe waiting for another migrate: a
            # role's timeouts would end it, and its lock with it.
            for statement in UNLIMITED:
                connection.exec_driver_sql(statement)
            if not connection.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK}):
                log.warning("another summaries migrate is running; waiting for it to finish")
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
            yield connection
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head", *, contract: bool = False,
            lock_timeout: str = LOCK_TIMEOUT, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
            batch_size: int | None = None) -> list[str]:
    """Apply the migrations up to `revision`; answer the contract revisions left for a later run."""
    config = alembic_config(url, lock_timeout, batch_size)
    with one_at_a_time(url) as locked:
        return _upgrade(locked, config, revision, contract, lock_timeout, attempts, backoff_s)


def _upgrade(locked, config, revision, contract, lock_timeout, attempts, backoff_s) -> list[str]:
    target, deferred = plan(config, _revision_on(locked), revision, contract)
    if deferred:
        log.warning("contract revisions %s left: they remove what the previous release still uses; once no "
                    "process of that release runs, apply them with `summaries migrate --contract`",
                    ", ".join(deferred))
    for attempt in range(1, attempts + 1):
        try:
            command.upgrade(config, target)
            return deferred
        except OperationalError as error:
            if not isinstance(error.orig, LockNotAvailable):
                raise
            at = _revision_on(locked)
            reason = error_line(error)
            if attempt == attempts:
                raise MigrationBlocked(f"the revision after {at or 'none'} waited more than {lock_timeout} for a "
                                       f"lock {attempts} times ({reason}); the database stays at {at or 'none'}: "
                                       "find the long transaction (pg_stat_activity) and run it again") from error
            pause = backoff_s * 2 ** (attempt - 1)
            log.warning("the revision after %s waited more than %s for a lock (%s), attempt %d of %d; "
                        "trying again in %.1f s", at or "none", lock_timeout, reason, attempt, attempts, pause)
            time.sleep(pause)
    return deferred
