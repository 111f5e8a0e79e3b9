"""One engine per process, made on first use from DATABASE_URL or the embedded server; the time limits
of its statements and transactions; which database errors are worth waiting for; and messages that go
out only once their transaction commits."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import select
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import InvalidatePoolError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from shared.platform import embedded
from shared.platform.config import Settings, get_settings, require_servers

log = logging.getLogger(__name__)

# The database unreachable (down, restarting, failing over), every pooled connection busy, or a
# statement cancelled for waiting too long (statement_cancelled below, an OperationalError too): worth
# waiting for and trying again. Anything else will not fix itself.
TRANSIENT_ERRORS = (OperationalError, PoolTimeout)


def error_line(error: BaseException) -> str:
    """The first line of the database's own message (SQLAlchemy's wrapper adds the statement and a
    link), or of the error's when there is none: what a one-line report or log needs."""
    message = str(getattr(error, "orig", None) or error).strip()
    return message.splitlines()[0] if message else type(error).__name__


def statement_cancelled(error: BaseException) -> bool:
    """Whether the server cancelled the statement: DATABASE_STATEMENT_TIMEOUT_MS (or a role's
    statement_timeout) ran out, a lock_timeout did, or an operator cancelled it (pg_cancel_backend).
    Almost always a wait for a lock someone else holds; the transaction is rolled back."""
    import psycopg.errors

    return isinstance(getattr(error, "orig", error), (psycopg.errors.QueryCanceled, psycopg.errors.LockNotAvailable))


def sqlalchemy_url(url: str) -> str:
    """Accept the usual `postgres://` and `postgresql://` spellings; always drive with psycopg 3."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def database_url(settings: Settings) -> str:
    """DATABASE_URL, or the embedded PostgreSQL (started or joined) where embedded servers are asked for."""
    if settings.database_url:
        return settings.database_url
    require_servers(settings)
    return embedded.postgres_url(settings.data_dir)


def connect_args(settings: Settings) -> dict[str, Any]:
    args: dict[str, Any] = {"connect_timeout": 5, "application_name": "call-feedback-summaries"}
    if not settings.database_prepared_statements:
        # psycopg prepares a statement the 6th time a connection runs it, on the server session it
        # is on; behind a transaction-mode PgBouncer the next transaction may be on another one
        # ("prepared statement _pg3_0 does not exist" / "already exists"). None: never prepare.
        args["prepare_threshold"] = None
    return args


def timeout_options(url: str, settings: Settings) -> dict[str, str]:
    """The timeouts as libpq startup options (`options=-c ...`): set by the server as the session
    starts, no round trip of ours, for every statement on the connection whatever runs it (the ORM,
    autocommit, COPY). After any `options` of DATABASE_URL itself, which they would otherwise replace.
    Nothing when both are 0: behind a transaction-mode PgBouncer, which refuses (or, told to ignore it,
    drops) the `options` parameter, the timeouts are the role's (docs/pgbouncer.md)."""
    ours = [f"-c {name}={ms}" for name, ms in (
        ("statement_timeout", settings.database_statement_timeout_ms),
        ("idle_in_transaction_session_timeout", settings.database_idle_in_transaction_timeout_ms)) if ms]
    if not ours:
        return {}
    # Given `options`, libpq ignores PGOPTIONS: those of the URL, else the environment's, go first.
    given = make_url(sqlalchemy_url(url)).query.get("options") or os.environ.get("PGOPTIONS") or ()
    given = [given] if isinstance(given, str) else list(given)
    return {"options": " ".join([*given, *ours])}


# Connection.info key: the connection's statement_timeout is the one this process sent (not a role's).
OWN_STATEMENT_TIMEOUT = "cfs_own_statement_timeout"


def _check_timeouts_applied(expected_ms: int):
    """A connect listener: read back statement_timeout once per new connection. A PgBouncer told to
    ignore the `options` startup parameter accepts the connection and drops the timeouts: said once
    per engine, and such a connection is never given a session SET (untimed_autocommit)."""
    warned = []

    def check(dbapi_connection, record) -> None:
        with dbapi_connection.cursor() as cursor:
            # Set by the client, not only equal: a role's or a database's own 10 s would pass for ours.
            cursor.execute("SELECT setting, source FROM pg_settings WHERE name = 'statement_timeout'")
            applied = cursor.fetchone() == (str(expected_ms), "client")
        dbapi_connection.rollback()  # the read began a transaction; the pool expects none
        record.info[OWN_STATEMENT_TIMEOUT] = applied
        if not applied and not warned:
            warned.append(True)
            log.warning("DATABASE_STATEMENT_TIMEOUT_MS: the server did not apply the startup options (a PgBouncer "
                        "with `options` in ignore_startup_parameters?): this process has no statement or "
                        "idle-in-transaction timeout of its own. Behind PgBouncer set DATABASE_STATEMENT_TIMEOUT_MS=0 "
                        "and DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS=0 and put the timeouts on the role "
                        "(docs/pgbouncer.md)")

    return check


def lift_statement_timeout(connection: Connection, lock_timeout: str | None = None) -> None:
    """No statement timeout for the rest of the connection's transaction: for work that is long by
    design (a bulk load, a fold of a backlog, a purge), never for a request's. With `lock_timeout`
    ("5s"), a wait for a lock is still bounded, by that. Transaction-local (SET LOCAL): it ends with
    the transaction, so it holds on whichever server connection a PgBouncer lent the transaction and
    reaches no other client; it lifts a role's timeout as well as ours."""
    if lock_timeout is None:
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
    else:  # both in one round trip
        connection.execute(text("SELECT set_config('statement_timeout', '0', true), "
                                "set_config('lock_timeout', :lock_timeout, true)"), {"lock_timeout": lock_timeout})


@contextlib.contextmanager
def untimed_autocommit(engine: Engine | None = None) -> Iterator[Connection]:
    """autocommit() for a statement that cannot run in a transaction (VACUUM) and may take long, so no
    SET LOCAL can lift the timeout. The timeout this process sent is lifted by a session SET and reset
    (to the startup value) before the connection goes back to the pool. A role's stays: behind a
    transaction-mode PgBouncer the SET and the RESET may land on different server connections and
    leave other clients without a timeout. So the caller must accept being cut short there."""
    with autocommit(engine) as connection:
        if not connection.info.get(OWN_STATEMENT_TIMEOUT):
            yield connection
            return
        connection.exec_driver_sql("SET statement_timeout = 0")
        try:
            yield connection
        finally:
            if not connection.invalidated:  # a lost connection goes back to no pool: nothing to reset
                try:
                    connection.exec_driver_sql("RESET statement_timeout")
                except SQLAlchemyError:
                    connection.invalidate()  # never back to the pool without its timeout


def _idle_and_open(dbapi_connection) -> bool:
    """Whether a pooled connection is still usable, asked without a round trip. An idle connection
    receives nothing: a server that shut down or restarted (or a PgBouncer that did) has sent its
    FATAL message and closed the socket, so input is waiting (the message, or the end of the stream).
    Anything else received while idle (a reported setting changed by a failover) makes it suspect
    too: a new connection costs little, a failed request more."""
    import psycopg.pq

    pgconn = dbapi_connection.pgconn
    if pgconn.status != psycopg.pq.ConnStatus.OK or pgconn.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        # A zero timeout: one poll of the socket (gevent's select makes the same single call then).
        return not select.select([pgconn.socket], [], [], 0)[0]
    except ValueError:
        # A descriptor beyond select()'s FD_SETSIZE: libpq reads what is there without waiting (its
        # socket is always non-blocking) and fails on a closed one.
        try:
            pgconn.consume_input()
        except psycopg.OperationalError:
            return False
        return pgconn.status == psycopg.pq.ConnStatus.OK


def _check_on_checkout(dbapi_connection, record, proxy) -> None:
    if not _idle_and_open(dbapi_connection):
        # As pool_pre_ping does on a failed ping: this one and every older pooled connection are
        # replaced (they all saw the same restart); the pool then tries a new connection.
        raise InvalidatePoolError("the pooled connection was closed by the server")


def _idle_kill_is_a_lost_connection(context):
    """The server ends a session left idle in a transaction (DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS)
    with SQLSTATE 25P03, which the DBAPI files under InternalError: to its owner it is a lost
    connection like any other (replaced, the request a 503, the task retried), not a bug of the
    statement that found it."""
    import psycopg.errors

    if isinstance(context.original_exception, psycopg.errors.IdleInTransactionSessionTimeout):
        context.is_disconnect = True
        return OperationalError(context.statement, context.parameters, context.original_exception,
                                connection_invalidated=True)
    return None


def make_engine(url: str, settings: Settings | None = None) -> Engine:
    """The pool checks each connection it hands out without pool_pre_ping's round trip (a SELECT 1
    on every checkout, one more round trip per request than the request's own): a connection the
    server closed while it was pooled has its socket closed, which libpq sees without asking. A
    connection that breaks after the check fails its statement as before (503, TRANSIENT_ERRORS),
    and SQLAlchemy then replaces every older pooled connection."""
    settings = settings or get_settings()
    engine = create_engine(
        sqlalchemy_url(url),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_s,
        connect_args={**connect_args(settings), **timeout_options(url, settings)},
    )
    event.listen(engine, "checkout", _check_on_checkout)
    event.listen(engine, "handle_error", _idle_kill_is_a_lost_connection)
    if settings.database_statement_timeout_ms:
        event.listen(engine, "connect", _check_timeouts_applied(settings.database_statement_timeout_ms))
    return engine


@functools.cache
def get_engine() -> Engine:
    return make_engine(database_url(get_settings()))


AUTOCOMMIT = "AUTOCOMMIT"


def autocommit(engine: Engine | None = None) -> Connection:
    """A pooled connection on which each statement is its own transaction: for work that is one
    statement (a callback's claim or settle) or cannot run in a transaction (VACUUM), without the
    BEGIN and COMMIT round trips."""
    return (engine or get_engine()).connect().execution_options(isolation_level=AUTOCOMMIT)


def is_autocommit(connection: Connection) -> bool:
    return connection.get_execution_options().get("isolation_level") == AUTOCOMMIT


@functools.cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


_AFTER_COMMIT = "cfs_after_commit"


@dataclass
class Outgoing:
    """A message to send once the transaction that made it due has committed: the one way every
    message is sent after a write. Whoever commits sends it: `outgoing()` after an autocommit
    statement or a commit, or `after_commit(session, ...)` to have the session's commit send it.
    `result` is what the send returned; None if it has not run (yet, or ever: the transaction
    rolled back) or raised (logged: the sweeper repairs it from the committed rows)."""

    send: Callable[..., Any]
    args: tuple = ()
    result: Any = field(default=None)

    def __call__(self) -> Any:
        self.result = send_committed(self.send, *self.args)
        return self.result


def after_commit(session: Session, send: Callable[..., Any] | Outgoing, *args) -> Outgoing:
    """Send once the session's current transaction commits, never before, never if it rolls back:
    a worker must never receive an id whose row it cannot read yet."""
    outgoing = send if isinstance(send, Outgoing) else Outgoing(send, args)
    session.info.setdefault(_AFTER_COMMIT, []).append(outgoing)
    return outgoing


def send_committed(send: Callable[..., Any], *args) -> Any:
    """send(*args) for rows a transaction has committed: what it returned, or None if it raised. A
    failure is the sweeper's to repair (it finds the committed rows), never the caller's."""
    try:
        return send(*args)
    except Exception:
        log.warning("sending after commit failed; the sweeper will send it", exc_info=True)
        return None


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    for outgoing in session.info.pop(_AFTER_COMMIT, []):
        outgoing()


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # Runs after after_commit on a commit (nothing left then), and alone on a rollback or close.
    if transaction.parent is None:
        session.info.pop(_AFTER_COMMIT, None)
