"""Through a real PgBouncer in transaction mode (docs/pgbouncer.md): Debian's /usr/sbin/pgbouncer in
front of the test database, with a server pool of 2 so that every transaction may land on another
server connection than the last one of the same client. With DATABASE_PREPARED_STATEMENTS=off the
API, the workers and the migrations run through it; with prepared statements on, a PgBouncer
without max_prepared_statements (1.18, Debian 12's, has none) breaks on the 6th run of a statement."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from shared.platform import db
from shared.platform.config import SettingError, Settings
from tests.processes import running, stopped, summaries_cli, wait_for
from tests.support import (
    basic,
    debian_program,
    feedback_path,
    free_port,
    lock_held,
    make_account,
    make_calls,
    require_debian_program,
    summaries_path,
)

PGBOUNCER = debian_program("pgbouncer")
SERVER_POOL = 2  # server connections per database and user: fewer than the clients, so they are shared

class PgBouncer:
    """A PgBouncer of the test's own in a temporary directory, in front of `upstream`'s database,
    transaction pooling, trust authentication (the user listed in an auth_file), admin console on."""

    def __init__(self, upstream: str, pool_size: int = SERVER_POOL, extra: str = ""):
        server = conninfo_to_dict(upstream)
        self.user, self.dbname = server.get("user") or "postgres", server.get("dbname") or "postgres"
        target = " ".join(f"{key}={value}" for key, value in server.items()
                          if key in ("host", "port", "dbname", "user", "password") and value)
        self.port = free_port()
        # Readable by the user PgBouncer drops to (it refuses to run as root): not pytest's 0700 tmp_path.
        self.dir = Path(tempfile.mkdtemp(prefix="cfs-pgbouncer-"))
        self.dir.chmod(0o755)
        (self.dir / "users.txt").write_text(f'"{self.user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
{self.dbname} = {target}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir / "users.txt"}
admin_users = {self.user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
query_wait_timeout = 15
{extra}
""")
        for path in self.dir.iterdir():
            path.chmod(0o644)
        self.log_path = self.dir / "pgbouncer.log"
        command = [PGBOUNCER, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(self.dir / "pgbouncer.ini")]
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        running(self)
        try:
            wait_for(self._listening, 10, 0.05, "pgbouncer to listen")
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{quote(self.dbname)}"

    def _listening(self) -> bool:
        assert self.popen.poll() is None, self.log_path.read_text()
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def show(self, what: str) -> list[dict]:
        """SHOW POOLS, CLIENTS, SERVERS, STATS... on the admin console (simple query protocol only)."""
        with psycopg.connect(f"host=127.0.0.1 port={self.port} dbname=pgbouncer user={self.user}", autocommit=True,
                             cursor_factory=psycopg.ClientCursor) as console:
            cursor = console.execute(f"SHOW {what}")
            names = [column.name for column in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def ours(self, what: str) -> list[dict]:
        return [row for row in self.show(what) if row["database"] == self.dbname]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
        stopped(self)


@pytest.fixture(scope="module")
def upstream(service_urls) -> str:
    """The test database, for a PgBouncer to stand in front of; and PgBouncer itself installed."""
    require_debian_program("pgbouncer")
    if (conninfo_to_dict(service_urls["database"]).get("host") or "/").startswith("/"):
        # PgBouncer runs as `nobody` (it refuses root) and cannot open the embedded server's private
        # socket directory: these tests need TEST_DATABASE_URL on TCP, as .ci/run gives them.
        pytest.skip("PgBouncer needs PostgreSQL on TCP (TEST_DATABASE_URL)")
    return service_urls["database"]


@pytest.fixture(scope="module")
def pgbouncer(upstream):
    bouncer = PgBouncer(upstream)
    try:
        yield bouncer
    finally:
        bouncer.stop()


# As docs/pgbouncer.md says to configure a process behind PgBouncer: it sends no `options` (the
# timeouts are the role's); prepared statements as each test says.
BEHIND_PGBOUNCER = {"DATABASE_STATEMENT_TIMEOUT_MS": "0", "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS": "0"}


def settings(prepared: str) -> Settings:
    return Settings.from_env({**os.environ, **BEHIND_PGBOUNCER, "DATABASE_PREPARED_STATEMENTS": prepared})


@pytest.mark.parametrize("variable, value, message", [
    ("DATABASE_PREPARED_STATEMENTS", "maybe", "true or false"),
    ("DATABASE_POOL_SIZE", "0", "at least 1"),  # SQLAlchemy would read 0 as no limit
    ("DATABASE_MAX_OVERFLOW", "-1", "at least 0"),  # and -1 as no limit on overflow
    ("DATABASE_POOL_TIMEOUT_S", "0", "at least 0.1"),
    ("DATABASE_POOL_SIZE", "ten", "an integer"),
])
def test_a_bad_database_setting_is_refused_by_name(variable, value, message):
    with pytest.raises(SettingError, match=f"^{variable} must .*{message}"):
        Settings.from_env({variable: value})


def test_database_settings_defaults_and_spellings():
    defaults = Settings.from_env({})
    assert (defaults.database_prepared_statements, defaults.database_pool_size, defaults.database_max_overflow,
            defaults.database_pool_timeout_s, defaults.migration_database_url) == (True, 5, 5, 5.0, None)
    for off in ("off", "OFF", "false", "no", "0"):
        assert not Settings.from_env({"DATABASE_PREPARED_STATEMENTS": off}).database_prepared_statements


@pytest.mark.parametrize("prepared, threshold", [("on", 5), ("off", None)])
def test_the_setting_reaches_every_psycopg_connection_of_the_engine(service_urls, prepared, threshold):
    engine = db.make_engine(service_urls["database"], settings(prepared))
    try:
        with engine.connect() as connection:
            assert connection.connection.dbapi_connection.prepare_threshold == threshold  # 5: psycopg's default
    finally:
        engine.dispose()


@pytest.mark.parametrize("prepared", ["on", "off"])
def test_prepared_statements_break_behind_pgbouncer_without_max_prepared_statements(pgbouncer, service_urls,
                                                                                   prepared):
    """Two connections of one engine take turns running one statement. Psycopg prepares it on a
    connection's 6th run as `_pg3_0`, on whichever server session PgBouncer lent it: the other
    client's `_pg3_0` may be there already, or its own missing next time."""
    engine = db.make_engine(pgbouncer.url, settings(prepared))
    failure = None
    try:
        with engine.connect() as first, engine.connect() as second:
            for run in range(10):
                for connection in (first, second):
                    try:
                        assert connection.scalar(text("SELECT :n + 1"), {"n": run}) == run + 1
                        connection.commit()
                    except DBAPIError as error:
                        failure = (run, error.orig)
                        raise
    except DBAPIError:
        pass
    finally:
        engine.dispose()
    if prepared == "on":
        assert failure is not None, "prepared statements went through a PgBouncer that cannot keep them"
        run, error = failure
        assert run >= 5 and isinstance(error, (psycopg.errors.DuplicatePreparedStatement,
                                               psycopg.errors.InvalidSqlStatementName)), failure
        assert "_pg3_0" in str(error)
    else:
        assert failure is None


@pytest.fixture(params=["off", "on"])
def through_pgbouncer(request, engine, redis_client, pgbouncer, settings_env):
    """This process's engine (the API's, the in-process worker's) on PgBouncer, with prepared
    statements off, then on; the `engine` fixture's stays on the server, for the test's own setup
    and checks."""
    settings_env(DATABASE_URL=pgbouncer.url, DATABASE_PREPARED_STATEMENTS=request.param, **BEHIND_PGBOUNCER)
    return request.param


CALLS = 40
THREADS = 4  # request threads, each with its own pooled connection to PgBouncer: twice its server pool


def test_the_api_and_the_worker_through_pgbouncer(through_pgbouncer, pgbouncer, engine, caplog):
    """Feedback posts, fetches, summary creates, computes (the worker's task, in process) and fetches
    from 4 threads: each statement runs far more than 5 times on each of the 4 client connections,
    which PgBouncer serves with 2 server connections. With prepared statements on, the feedback
    posts alone (commits and no rollback, which would reset psycopg's counts) already fail."""
    from api.factory import create_app
    from tests.support import WsgiClient
    from worker.summaries import compute_summary

    client = WsgiClient(create_app())
    assert db.get_engine().url.port == pgbouncer.port
    account = make_account(engine)
    auth = (account.sid, account.auth_token)
    now = dt.datetime.now(dt.timezone.utc)
    calls = make_calls(engine, account, [now - dt.timedelta(minutes=i) for i in range(CALLS)])
    today = now.date()
    form = {"StartDate": (today - dt.timedelta(days=1)).isoformat(), "EndDate": today.isoformat()}

    def feedback(i: int) -> int:
        return client.post(feedback_path(account.sid, calls[i]), form={"QualityScore": str(i % 5 + 1)},
                           auth=auth).status

    def fetch_feedback(i: int) -> int:
        fetched = client.get(feedback_path(account.sid, calls[i]), auth=auth)
        assert fetched.status == 200, fetched.body
        return fetched.json["quality_score"]

    def create(_: int) -> str:
        created = client.post(summaries_path(account.sid), form=form, auth=auth)
        assert created.status == 201, created.body
        fetched = client.get(summaries_path(account.sid, created.json["sid"]), auth=auth)
        assert fetched.status == 200, fetched.body
        return created.json["sid"]

    def compute_and_fetch(sid: str) -> dict:
        compute_summary.apply(args=[sid])
        fetched = client.get(summaries_path(account.sid, sid), auth=auth)
        assert fetched.status == 200, fetched.body
        return fetched.json

    started = time.perf_counter()
    # The first request alone: the metrics are made on first use, and two threads making them at
    # once would register them twice (shared/platform/metrics.py is not thread-safe there).
    posted = [feedback(0)]
    with concurrent.futures.ThreadPoolExecutor(THREADS) as pool:
        posted += pool.map(feedback, range(1, CALLS))
        if through_pgbouncer == "on":
            failures = [str(r.exc_info[1]).splitlines()[0] for r in caplog.records if r.exc_info]
            assert 500 in posted and failures, posted
            # "_pg3_0 already exists" (another client prepared it on that server), "does not exist"
            # (prepared on another server), or worse: another client's _pg3_N run with these
            # parameters ("invalid input syntax for type smallint" when lucky).
            assert any('prepared statement "_pg3_' in failure for failure in failures), failures
            return
        assert posted == [200] * CALLS
        scores = list(pool.map(fetch_feedback, range(CALLS)))
        sids = list(pool.map(create, range(CALLS)))
        results = list(pool.map(compute_and_fetch, sids))
    elapsed = time.perf_counter() - started
    assert scores == [i % 5 + 1 for i in range(CALLS)]
    assert {(r["status"], r["call_count"], r["call_feedback_count"], r["quality_score_average"])
            for r in results} == {("completed", CALLS, CALLS, 3)}
    clients, servers = pgbouncer.ours("CLIENTS"), pgbouncer.ours("SERVERS")
    assert len(clients) > SERVER_POOL >= len(servers), (clients, servers)
    (stats,) = pgbouncer.ours("STATS")
    print(f"\n{6 * CALLS} requests and {CALLS} computes in {elapsed:.2f}s; {len(clients)} clients on "
          f"{len(servers)} server connections; {stats['total_xact_count']} transactions, "
          f"{stats['total_query_count']} statements so far")


def test_migrations_run_through_pgbouncer_on_migration_database_url(pgbouncer, engine):
    """The release step, `summaries migrate`, takes MIGRATION_DATABASE_URL over DATABASE_URL (here
    unreachable); each migration is one transaction (its lock_timeout a SET LOCAL), so even a
    transaction-mode PgBouncer can carry it."""
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()  # its connections' prepared statements named the dropped tables
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/unreachable",
           "MIGRATION_DATABASE_URL": pgbouncer.url, "DATABASE_PREPARED_STATEMENTS": "off"}
    done = summaries_cli("migrate", env=env)
    assert done.returncode == 0, done.stderr
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM alembic_version")) == 1
        assert connection.scalar(text("SELECT to_regclass('feedback_summaries') IS NOT NULL"))


# --- statement and idle-in-transaction timeouts -----------------------------------------------------

def test_the_timeouts_as_startup_options_are_refused_by_pgbouncer(pgbouncer):
    """Why a process behind PgBouncer sets DATABASE_STATEMENT_TIMEOUT_MS=0: PgBouncer refuses the
    `options` startup parameter (1.18; from 1.20 it refuses each -c in it it neither tracks nor
    ignores), so with the defaults no connection opens; the command line says what to set."""
    engine = db.make_engine(pgbouncer.url, Settings.from_env({**os.environ, "DATABASE_PREPARED_STATEMENTS": "off"}))
    try:
        with pytest.raises(DBAPIError, match="unsupported startup parameter"):
            engine.connect()
    finally:
        engine.dispose()
    done = summaries_cli("jobs", env={**os.environ, "DATABASE_URL": pgbouncer.url})
    assert done.returncode == 2 and "set DATABASE_STATEMENT_TIMEOUT_MS=0" in done.stderr, done.stderr


def test_a_pgbouncer_that_drops_the_options_is_found_out(upstream, caplog):
    """`ignore_startup_parameters = options` lets the connection open without the timeouts: the
    process says so, and never lifts them with a session SET there (it would stay on a server
    connection that other clients get next)."""
    bouncer = PgBouncer(upstream, extra="ignore_startup_parameters = options")
    engine = db.make_engine(bouncer.url, Settings.from_env({**os.environ, "DATABASE_PREPARED_STATEMENTS": "off"}))
    sent = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *args: sent.append(statement))
    try:
        with caplog.at_level(logging.WARNING, logger="shared.platform.db"):
            with db.untimed_autocommit(engine) as connection:
                assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "0"
                assert connection.info[db.OWN_STATEMENT_TIMEOUT] is False
        assert "did not apply the startup options" in caplog.text
        assert not [statement for statement in sent if "statement_timeout =" in statement]
    finally:
        engine.dispose()
        bouncer.stop()


@pytest.fixture
def role_statement_timeout(engine, upstream):
    """As docs/pgbouncer.md says to set the timeout behind PgBouncer: on the role, in this database
    (new server connections start with it). Reset after, and the test's own pool emptied of
    connections that started with it."""
    database = conninfo_to_dict(upstream).get("dbname") or "postgres"

    def alter(clause: str) -> None:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'ALTER ROLE CURRENT_USER IN DATABASE "{database}" {clause}')

    alter("SET statement_timeout = '300ms'")
    try:
        yield 0.3
    finally:
        alter("RESET statement_timeout")
        engine.dispose()


def test_behind_pgbouncer_the_roles_timeout_answers_503_and_the_imports_lift_it(upstream, engine, redis_client,
                                                                               role_statement_timeout, settings_env):
    """Through a transaction-mode PgBouncer (a fresh one: its server connections start with the
    role's timeout), with the process configured as documented: a request behind a lock is a 503
    within the timeout, and an import waiting longer than it goes through, its SET LOCAL carried
    by the transaction's server connection."""
    from api.factory import create_app
    from cli.imports import import_calls
    from tests.support import WsgiClient

    account = make_account(engine)
    (call,) = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)])
    bouncer = PgBouncer(upstream)
    settings_env(DATABASE_URL=bouncer.url, DATABASE_PREPARED_STATEMENTS="off", **BEHIND_PGBOUNCER)
    try:
        client = WsgiClient(create_app())
        with engine.connect() as locker, locker.begin():
            locker.exec_driver_sql("LOCK TABLE call_feedback IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            blocked = client.post(feedback_path(account.sid, call), form={"QualityScore": "3"},
                                  auth=(account.sid, account.auth_token))
            waited = time.monotonic() - started
        assert blocked.status == 503 and blocked.headers["Retry-After"] == "5", blocked.body
        assert "rolled back" in blocked.json["message"], blocked.body  # the timeout's 503, not the pool's
        assert role_statement_timeout <= waited < role_statement_timeout + 3, waited

        calls = "".join(f"CA{i:032x},{account.sid},2024-01-03T10:00:00Z\n" for i in range(3))
        with lock_held(engine, "LOCK TABLE calls IN SHARE MODE", for_s=5 * role_statement_timeout):
            started = time.monotonic()
            with db.get_engine().begin() as connection:
                assert import_calls(connection, io.StringIO("sid,account_sid,start_time\n" + calls)) == 3
        assert time.monotonic() - started > 2 * role_statement_timeout  # it did wait for the lock
    finally:
        db.get_engine().dispose()
        bouncer.stop()


SUMMARIES = 12


@pytest.mark.slow
def test_gunicorn_workers_and_beat_through_pgbouncer_compute_and_call_back(pgbouncer, engine, redis_client, tmp_path):
    """The Procfile's web, callbacks-style worker (threads, both queues) and scheduler, each with
    DATABASE_URL on PgBouncer and prepares off: summaries created over HTTP are computed and their
    callbacks delivered, while the scheduler's fold and sweep run through it too."""
    from tests.processes import celery_beat, celery_worker, gunicorn
    from tests.receiver import Receiver

    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 3)
    env = {"DATABASE_URL": pgbouncer.url, "DATABASE_PREPARED_STATEMENTS": "off", **BEHIND_PGBOUNCER,
           "CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"}
    receiver = Receiver()
    started = []
    try:
        # The worker and the scheduler start while gunicorn does; messages wait in Redis meanwhile.
        started.append(celery_worker(tmp_path, "bounced", concurrency=8, env=env, pool="threads"))
        started.append(celery_beat(tmp_path, env))
        web, base_url = gunicorn(tmp_path, env=env)
        started.append(web)
        form = urlencode({"StartDate": "2024-01-01", "EndDate": "2024-01-31",
                          "StatusCallback": receiver.script("/done")}).encode()
        sids = []
        for _ in range(SUMMARIES):
            request = urllib.request.Request(base_url + summaries_path(account.sid), data=form,
                                             headers={"Authorization": basic(account.sid, account.auth_token)})
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 201
                sids.append(json.load(response)["sid"])

        def delivered() -> bool:
            with engine.connect() as connection:
                states = connection.execute(text("SELECT state FROM callback_deliveries")).scalars().all()
            return states == ["delivered"] * SUMMARIES

        wait_for(delivered, 60, 0.2, f"{SUMMARIES} callbacks delivered through pgbouncer")
        clients = pgbouncer.ours("CLIENTS")
    finally:
        for process in started:
            process.stop()
        receiver.close()
    callbacks = receiver.requests_to("/done")
    assert sorted(r.form["FeedbackSummarySid"] for r in callbacks) == sorted(sids)
    assert {(r.form["Status"], r.form["CallCount"]) for r in callbacks} == {("completed", "3")}
    for process in started:
        assert "prepared statement" not in process.output() and "Traceback" not in process.output(), process.name
    assert len(clients) > SERVER_POOL
