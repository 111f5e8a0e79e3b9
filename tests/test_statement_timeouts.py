"""DATABASE_STATEMENT_TIMEOUT_MS and DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS, on real PostgreSQL: the
settings and how they reach every connection; a request stuck behind a lock another connection holds
answers a Twilio 503 within the timeout and writes nothing; the compute task takes the timeout as a
transient error; the work that is long by design (imports, seed, purge, the fold and its VACUUM) is
not cut by it. Migrations: tests/test_migrations.py; behind PgBouncer: tests/test_pgbouncer.py."""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from urllib.parse import quote

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from shared.accounts.sids import CALL, new_sid
from shared.platform import db
from shared.platform.config import SettingError, Settings
from shared.signing import signature
from tests.support import (
    FORM,
    WsgiClient,
    feedback_path,
    lock_held,
    make_account,
    make_calls,
    queued_messages,
    snapshot,
    summaries_path,
    summary_in,
)

TIMEOUT_MS = 300


@pytest.fixture
def timeouts(engine, settings_env):
    """Remake this process's engine with these settings: the API app, the worker's tasks and the
    commands made after the call use it. `engine` (made before) keeps the defaults, for the test's own
    setup, locks and checks."""
    def apply(**env):
        settings_env(**{name: str(value) for name, value in env.items()})
        return db.get_engine()

    return apply


def show(connection, name: str) -> str:
    return connection.exec_driver_sql(f"SHOW {name}").scalar()


# --- the settings ----------------------------------------------------------------------------------

def test_defaults_and_zero():
    defaults = Settings.from_env({})
    assert (defaults.database_statement_timeout_ms, defaults.database_idle_in_transaction_timeout_ms) == (10_000,
                                                                                                         60_000)
    off = Settings.from_env({"DATABASE_STATEMENT_TIMEOUT_MS": "0", "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS": "0"})
    assert (off.database_statement_timeout_ms, off.database_idle_in_transaction_timeout_ms) == (0, 0)


@pytest.mark.parametrize("variable", ["DATABASE_STATEMENT_TIMEOUT_MS", "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS"])
@pytest.mark.parametrize("value, message", [("10s", "an integer"), ("1.5", "an integer"), ("-1", "at least 0"),
                                            ("2147483648", "at most 2147483647"),
                                            ("10", r"0 \(none\) or at least 100 \(milliseconds\)")])
def test_a_bad_timeout_is_refused_by_name(variable, value, message):
    with pytest.raises(SettingError, match=f"^{variable} must .*{message}"):
        Settings.from_env({variable: value})


def test_the_timeouts_reach_every_connection_as_startup_options(service_urls):
    settings = Settings.from_env({"DATABASE_STATEMENT_TIMEOUT_MS": "250", "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS":
                                  "1500"})
    # Options of DATABASE_URL's own are kept, before ours.
    url = service_urls["database"] + ("&" if "?" in service_urls["database"] else "?") + "options=" + quote(
        "-c work_mem=7MB")
    engine = db.make_engine(url, settings)
    try:
        with engine.connect() as connection, db.autocommit(engine) as autocommitting:
            for each in (connection, autocommitting):
                assert (show(each, "statement_timeout"), show(each, "idle_in_transaction_session_timeout"),
                        show(each, "work_mem")) == ("250ms", "1500ms", "7MB")
            assert connection.info[db.OWN_STATEMENT_TIMEOUT] is True
            with pytest.raises(OperationalError) as raised:
                connection.exec_driver_sql("SELECT pg_sleep(1)")
            assert db.statement_cancelled(raised.value)
    finally:
        engine.dispose()


def test_zero_sends_no_options_and_the_servers_setting_applies(service_urls):
    settings = Settings.from_env({"DATABASE_STATEMENT_TIMEOUT_MS": "0", "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS": "0"})
    assert db.timeout_options(service_urls["database"], settings) == {}
    engine = db.make_engine(service_urls["database"], settings)
    try:
        with engine.connect() as connection:
            assert "options" not in connection.connection.dbapi_connection.info.get_parameters()
            assert show(connection, "statement_timeout") == "0"
            assert db.OWN_STATEMENT_TIMEOUT not in connection.info
    finally:
        engine.dispose()


# --- a request behind a lock -----------------------------------------------------------------------

def _status_callback(account, call_sid: str) -> tuple[str, str, dict]:
    form = {"AccountSid": account.sid, "CallSid": call_sid, "CallStatus": "initiated"}
    sign = signature(account.auth_token, "http://localhost/twilio/voice/status", form)
    return "POST", "/twilio/voice/status", {"form": form, "headers": {"Host": "localhost", "X-Twilio-Signature": sign}}


# (what, the lock another transaction holds, the request). The key's create writes the summary and
# the key before it waits on summary_events, and the delete removes the summary before its cascade
# waits: what they wrote first must go too.
BLOCKED = {
    "create": ("summary_events", lambda a, call, sid: ("POST", summaries_path(a.sid), {"form": FORM})),
    "create with an Idempotency-Key": ("summary_events", lambda a, call, sid: (
        "POST", summaries_path(a.sid), {"form": FORM, "headers": {"Idempotency-Key": "k1"}})),
    "fetch": ("feedback_summaries", lambda a, call, sid: ("GET", summaries_path(a.sid, sid), {})),
    "delete": ("summary_events", lambda a, call, sid: ("DELETE", summaries_path(a.sid, sid), {})),
    "post feedback": ("call_feedback", lambda a, call, sid: (
        "POST", feedback_path(a.sid, call), {"form": {"QualityScore": "2", "Issue": "dropped-call"}})),
    "a call status callback": ("calls", lambda a, call, sid: _status_callback(a, new_sid(CALL))),
    "update an annotation": ("call_annotations", lambda a, call, sid: (
        "POST", f"/v1/Voice/{call}/Annotation", {"form": {"CallScore": "2", "QualityIssues": "echo"}})),
    "clear an annotation's score": ("call_feedback", lambda a, call, sid: (
        "POST", f"/v1/Voice/{call}/Annotation", {"form": {"CallScore": ""}})),
}


@pytest.mark.parametrize("what", BLOCKED)
def test_a_request_behind_a_lock_answers_503_within_the_timeout_and_writes_nothing(engine, redis_client, timeouts,
                                                                                   caplog, what):
    from api.factory import create_app

    table, build = BLOCKED[what]
    account = make_account(engine)
    (call,) = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)])
    timeouts(DATABASE_STATEMENT_TIMEOUT_MS=TIMEOUT_MS)
    client = WsgiClient(create_app())
    auth = (account.sid, account.auth_token)
    sid = client.post(summaries_path(account.sid), form=FORM, auth=auth).json["sid"]
    redis_client.delete("summaries")
    method, path, request = build(account, call, sid)
    if path != "/twilio/voice/status":
        request["auth"] = auth
    before = snapshot(engine)

    with lock_held(engine, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"), caplog.at_level(logging.WARNING):
        started = time.monotonic()
        response = client.request(method, path, **request)
        waited = time.monotonic() - started

    assert response.status == 503, response.body
    assert response.json["code"] == 20503 and "rolled back" in response.json["message"]
    assert response.headers["Retry-After"] == "5"
    assert TIMEOUT_MS / 1000 <= waited < TIMEOUT_MS / 1000 + 3, waited
    assert "database statement cancelled" in caplog.text
    assert snapshot(engine) == before and queued_messages(redis_client) == []
    # The lock gone, the same request goes through on the same pool: the cancel broke no connection.
    assert 200 <= client.request(method, path, **request).status < 300


# --- the compute task ------------------------------------------------------------------------------

@pytest.fixture
def compute_summary(service_urls):
    from worker.summaries import compute_summary

    return compute_summary


def _queued_summary(engine, account) -> str:
    return summary_in(engine, account)


def _summary(engine, sid: str) -> dict:
    with engine.connect() as connection:
        return connection.execute(text("SELECT * FROM feedback_summaries WHERE sid = :s"), {"s": sid}).one()._asdict()


def test_a_computation_behind_a_lock_is_retried_as_a_transient_error_and_completes(engine, redis_client, timeouts,
                                                                                 compute_summary, caplog):
    """The lock (an operator's, a migration's) goes away: the summary completes. Eagerly applied,
    the retries run at once, one every TIMEOUT_MS while the lock lasts."""
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 3)
    sid = _queued_summary(engine, account)
    timeouts(DATABASE_STATEMENT_TIMEOUT_MS=TIMEOUT_MS)
    with lock_held(engine, "LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE", for_s=3 * TIMEOUT_MS / 1000), \
            caplog.at_level(logging.WARNING, logger="worker.summaries"):
        compute_summary.apply(args=[sid])
    done = _summary(engine, sid)
    assert (done["status"], done["call_count"]) == ("completed", 3)
    assert done["attempts"] >= 2 and "transient database error; retrying" in caplog.text


def test_a_computation_that_keeps_timing_out_fails_after_the_retries_with_the_reason(engine, redis_client, timeouts,
                                                                                    compute_summary):
    from worker.retry_policy import MAX_TRANSIENT_RETRIES

    account = make_account(engine)
    sid = _queued_summary(engine, account)
    timeouts(DATABASE_STATEMENT_TIMEOUT_MS=100)
    with lock_held(engine, "LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE"):
        compute_summary.apply(args=[sid])
        failed = _summary(engine, sid)
    assert failed["status"] == "failed" and failed["attempts"] == MAX_TRANSIENT_RETRIES + 1
    assert "statement timeout" in failed["failure_reason"]


# --- work that is long by design -------------------------------------------------------------------

def _blocked_ordinary_write(table: str) -> None:
    """A control: the process's timeout is in force for an ordinary statement meanwhile."""
    with pytest.raises(OperationalError) as raised, db.get_engine().begin() as connection:
        connection.exec_driver_sql(f"LOCK TABLE {table} IN ROW EXCLUSIVE MODE")
    assert db.statement_cancelled(raised.value)


def _import_calls(engine, account):
    from cli.imports import import_calls

    rows = "".join(f"{new_sid(CALL)},{account.sid},2024-01-0{d}T10:00:00Z\n" for d in range(1, 10))

    def run() -> int:
        with db.get_engine().begin() as connection:
            return import_calls(connection, io.StringIO("sid,account_sid,start_time\n" + rows))
    return run, 9


def _import_feedback(engine, account):
    from cli.imports import import_feedback

    calls = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 4)
    rows = "".join(f"{sid},4,dropped-call,2024-01-02T11:00:00Z\n" for sid in calls)

    def run() -> int:
        with db.get_engine().begin() as connection:
            return import_feedback(connection, io.StringIO("call_sid,quality_score,issues,date_created\n" + rows))
    return run, 4


def _seed(engine, account):
    from cli.seed import seed

    def run() -> int:
        with db.get_engine().connect() as connection:
            seed(connection, account.sid, 50, 3)
        return 50
    return run, 50


def _purge(engine, account):
    from shared.operator import actions

    sid = summary_in(engine, account, "failed")
    return lambda: actions.purge([sid], "operator:test"), 1


# What each writes (and waits for), and how to make it ready before the lock is taken.
LONG_BY_DESIGN = {"calls import": ("calls", _import_calls), "feedback import": ("call_feedback", _import_feedback),
                  "seed": ("calls", _seed), "purge": ("feedback_summaries", _purge)}
HELD_S = 5 * TIMEOUT_MS / 1000


@pytest.mark.parametrize("what", LONG_BY_DESIGN)
def test_imports_seed_and_purge_wait_past_the_timeout(engine, redis_client, timeouts, what):
    """Their statements may take longer than a request's (a million calls imported: 17 s); here one
    waits for a lock five times the timeout, and goes through."""
    table, prepare = LONG_BY_DESIGN[what]
    account = make_account(engine)
    run, rows = prepare(engine, account)
    timeouts(DATABASE_STATEMENT_TIMEOUT_MS=TIMEOUT_MS)
    with lock_held(engine, f"LOCK TABLE {table} IN SHARE MODE", for_s=HELD_S):
        locked_at = time.monotonic()
        _blocked_ordinary_write(table)
        assert run() == rows
    assert time.monotonic() - locked_at >= HELD_S - 0.1  # it did wait for the lock


def _pending_deltas(count: int, engine) -> str:
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i)
                                 for i in range(count)])
    return account.sid


def _vacuums(engine) -> int:
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        return connection.exec_driver_sql(
            "SELECT sum(vacuum_count) FROM pg_stat_user_tables WHERE relname IN "
            "('calls_rollup_deltas', 'feedback_rollup_deltas')").scalar()


def _slow_vacuum_url(service_urls, *options: str) -> str:
    """DATABASE_URL whose sessions VACUUM slowly (a 20 ms pause after every page): longer than the timeout."""
    url = service_urls["database"]
    given = " ".join(["-c vacuum_cost_delay=20 -c vacuum_cost_limit=1", *options])
    return url + ("&" if "?" in url else "?") + "options=" + quote(given)


@pytest.fixture
def no_autovacuum_on_deltas(engine):
    """Our VACUUM (SKIP_LOCKED) skips a delta table autovacuum is on: counted, it must be ours alone."""
    tables = ("calls_rollup_deltas", "feedback_rollup_deltas")
    with engine.begin() as connection:
        for table in tables:
            connection.exec_driver_sql(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    yield
    with engine.begin() as connection:
        for table in tables:
            connection.exec_driver_sql(f"ALTER TABLE {table} RESET (autovacuum_enabled)")


def test_the_fold_and_its_vacuum_run_past_the_timeout(engine, redis_client, timeouts, service_urls,
                                                      no_autovacuum_on_deltas):
    from worker.folding import fold

    _pending_deltas(2000, engine)
    vacuumed = _vacuums(engine)
    fresh = timeouts(DATABASE_URL=_slow_vacuum_url(service_urls), DATABASE_STATEMENT_TIMEOUT_MS=TIMEOUT_MS,
                     DATABASE_POOL_SIZE=1, DATABASE_MAX_OVERFLOW=0)
    with lock_held(engine, "LOCK TABLE daily_calls IN SHARE MODE", for_s=HELD_S):
        _blocked_ordinary_write("daily_calls")
        assert fold() == 2000  # its batch waited for the lock
    assert _vacuums(engine) == vacuumed + 2  # both tables vacuumed to the end: the pauses took long
    with fresh.connect() as connection:  # the one pooled connection has its timeout back
        assert show(connection, "statement_timeout") == f"{TIMEOUT_MS}ms"


def test_a_vacuum_cut_by_a_timeout_not_ours_is_logged_and_the_fold_stands(engine, redis_client, timeouts,
                                                                         service_urls, caplog,
                                                                         no_autovacuum_on_deltas):
    """As behind PgBouncer: no timeout of the process's own (nothing to lift by a session SET), the
    server's applies (a role's; here DATABASE_URL's options stand in for it)."""
    from worker.folding import fold

    account_sid = _pending_deltas(2000, engine)
    vacuumed = _vacuums(engine)
    timeouts(DATABASE_URL=_slow_vacuum_url(service_urls, f"-c statement_timeout={TIMEOUT_MS}"),
             DATABASE_STATEMENT_TIMEOUT_MS=0)
    with caplog.at_level(logging.WARNING, logger="worker.folding"):
        assert fold() == 2000
    assert "VACUUM of the rollup deltas cut short by a statement_timeout" in caplog.text
    assert _vacuums(engine) == vacuumed
    with engine.connect() as connection:
        assert connection.execute(text("SELECT sum(calls) FROM daily_calls WHERE account_sid = :a"),
                                  {"a": account_sid}).scalar() == 2000


def test_a_session_killed_idle_in_a_transaction_is_a_lost_connection_and_the_next_one_works(engine, timeouts):
    """The server's 25P03 is filed under InternalError; its owner takes it as a lost connection
    (TRANSIENT_ERRORS: the request a 503, the task retried), and the pool replaces it."""
    timed = timeouts(DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS=TIMEOUT_MS)
    with timed.connect() as connection:
        first = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()  # begins the transaction
        time.sleep(3 * TIMEOUT_MS / 1000)
        with pytest.raises(db.TRANSIENT_ERRORS) as lost:
            connection.exec_driver_sql("SELECT 1")
        assert lost.value.connection_invalidated
    with timed.connect() as connection:
        assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != first


def test_a_servers_own_timeout_equal_to_ours_is_not_taken_for_ours(engine, timeouts, service_urls):
    """Behind a PgBouncer that drops the startup options, a role's 10 s would read back as ours; the
    session SET of untimed_autocommit would then leak through the pooler to other clients."""
    with engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER ROLE CURRENT_USER IN DATABASE {connection.engine.url.database} "
                                   f"SET statement_timeout = {TIMEOUT_MS}")
    try:
        timed = timeouts(DATABASE_STATEMENT_TIMEOUT_MS=TIMEOUT_MS, PGOPTIONS="-c work_mem=7MB")
        with timed.connect() as connection:
            assert connection.info[db.OWN_STATEMENT_TIMEOUT]  # ours, sent as an option: source 'client'
            assert show(connection, "work_mem") == "7MB"  # PGOPTIONS kept beside ours
        zero = timeouts(DATABASE_STATEMENT_TIMEOUT_MS=0)
        with zero.connect() as connection:
            assert show(connection, "statement_timeout") == f"{TIMEOUT_MS}ms"  # the role's
        checked = db._check_timeouts_applied(TIMEOUT_MS)
        raw = zero.raw_connection()
        try:
            record = type("Record", (), {"info": {}})()
            checked(raw.dbapi_connection, record)
            assert record.info[db.OWN_STATEMENT_TIMEOUT] is False
        finally:
            raw.close()
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"ALTER ROLE CURRENT_USER IN DATABASE {connection.engine.url.database} "
                                       "RESET statement_timeout")
