"""What lets a revision be applied while the previous release keeps running (a rolling deploy).

- Every revision starts with `set_lock_timeout()` (statements that cannot run in a transaction, such
  as CREATE INDEX CONCURRENTLY, go through `outside_a_transaction()` with the same timeout): a revision waiting for a table lock queues every
  later writer of that table behind it, so it gives up after `lock_timeout` (5 s unless `summaries
  migrate --lock-timeout` says otherwise) instead of stalling the service; `summaries migrate`
  (cli/migrate.py) then tries the revision again after a pause. Each revision commits on its own
  (env.py: transaction_per_migration), so a retry starts at the revision that timed out. That is the
  only limit a revision has: its work (an index on a big table) takes what it takes, so a role's
  statement_timeout or idle_in_transaction_session_timeout (docs/pgbouncer.md) is lifted for it.
- Backfills go in batches, each committed on its own (`in_batches`), never under a table lock.
- A revision that removes what the previous release still uses is a *contract* revision: it names
  the revision whose change made the removal possible (`contracts = "0005"`), and `summaries
  migrate` applies it only with `--contract` (once the rollout is complete: only the operator knows)
  or on an empty database. Revisions after it wait with it, so a contract revision goes last in a
  release's chain.
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op
from sqlalchemy.engine import Connection

DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_BATCH_SIZE = 5000


def _attributes() -> dict:
    config = op.get_context().config
    return config.attributes if config is not None else {}


def lock_timeout() -> str:
    return _attributes().get("lock_timeout", DEFAULT_LOCK_TIMEOUT)


def batch_size() -> int:
    return int(_attributes().get("batch_size", DEFAULT_BATCH_SIZE))


# What set_lock_timeout() lifts: the time limits the service's own connections have, which a role
# setting would also give a migration's (DATABASE_STATEMENT_TIMEOUT_MS is never sent by migrations).
UNLIMITED = ("SET LOCAL statement_timeout = 0", "SET LOCAL idle_in_transaction_session_timeout = 0")


def set_lock_timeout(connection: Connection | None = None) -> None:
    """For the rest of the current transaction: give up on a lock not granted within the timeout, and
    on nothing else (no statement or idle-in-transaction timeout)."""
    for statement in (f"SET LOCAL lock_timeout = '{lock_timeout()}'", *UNLIMITED):
        if connection is None:
            op.execute(statement)
        else:
            connection.exec_driver_sql(statement)


def in_batches(step: Callable[[Connection, int], bool]) -> None:
    """Commit the revision's work so far, then call `step(connection, batch_size)` in a transaction of
    its own (lock_timeout set) until it answers False. A run cut short leaves committed batches
    behind: each step must find where the last one stopped from the database itself."""
    size = batch_size()
    context = op.get_context()
    with context.autocommit_block():
        with op.get_bind().engine.connect() as connection:
            more = True
            while more:
                with connection.begin():
                    set_lock_timeout(connection)
                    more = step(connection, size)


def outside_a_transaction(*statements: str) -> None:
    """Run statements that cannot run in a transaction (CREATE INDEX CONCURRENTLY), each committed as
    it runs. Session settings (there is no transaction for SET LOCAL): the lock timeout every revision
    has, and no statement timeout a role may have (docs/pgbouncer.md)."""
    with op.get_context().autocommit_block():
        op.execute(f"SET lock_timeout = '{lock_timeout()}'")
        op.execute("SET statement_timeout = 0")
        try:
            for statement in statements:
                op.execute(statement)
        finally:
            op.execute("RESET lock_timeout")
            op.execute("RESET statement_timeout")
