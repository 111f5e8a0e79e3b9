"""Every revision applies while the previous release keeps writing (issue 15).

One scratch database climbs from 0001 to the head holding data; while each revision N is applied,
threads run what the release before N ran against its schema (the SQL of each era is spelled out
below, from the code of that release: `git show <commit>:api/feedback.py` and so on), and keep on
after it against the new schema. Nothing they do may fail; the rollups must equal the aggregates of
the raw rows to the last unit, day by day; the tokens must be where each era reads them. Then: the
lock_timeout of every revision, a blocked revision retried by `summaries migrate`, and the
plaintext that the pre-issue-15 0005 left in the table's files removed by 0009.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import logging
import random
import re
import threading
import time
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from cli.migrate import MIGRATIONS_DIR, MigrationBlocked, alembic_config, current_revision, upgrade
from shared.migrations.rolling import UNLIMITED
from shared.models import FEEDBACK_ISSUES
from shared.platform import db

REVISIONS = [path.name[:4] for path in sorted((MIGRATIONS_DIR / "versions").glob("0*.py"))]
HEAD = REVISIONS[-1]
WAITING = REVISIONS[REVISIONS.index("0009"):]  # the contract revision 0009, and every later one with it
BATCH = 150  # 0003 and 0005 backfill in many batches, so the writers land between them


@pytest.fixture
def scratch(service_urls):
    """A database of its own next to the test database (`<test database>_mig`), dropped after."""
    base = make_url(service_urls["database"])
    name = f"{base.database}_mig"
    admin = create_engine(db.sqlalchemy_url(base.set(database="postgres").render_as_string(hide_password=False)),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    engine = create_engine(db.sqlalchemy_url(url))
    yield url, engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# ---------------------------------------------------------------------------------------------------
# The previous releases' writes. `era` is the schema revision the release was written for.

ACCOUNTS = [("AC" + hashlib.md5(f"a{i}".encode()).hexdigest(), hashlib.md5(f"t{i}".encode()).hexdigest())
            for i in range(3)]
PARENT_OF = {ACCOUNTS[2][0]: ACCOUNTS[0][0]}
FIRST_DAY = dt.datetime(2026, 10, 1, tzinfo=dt.timezone.utc)

# api/auth.py: session.get(Account, sid), every column the model of the release maps.
AUTH_BEFORE_0005 = text("SELECT sid, parent_sid, friendly_name, auth_token, date_created FROM accounts WHERE sid = :sid")
AUTH_FROM_0005 = text("SELECT sid, parent_sid, friendly_name, date_created, auth_token_hash, auth_token_encrypted, "
                      "secondary_token_hash, secondary_token_encrypted FROM accounts WHERE sid = :sid")
# api/feedback.py: insert ... on conflict (call_sid) do update ... returning.
FEEDBACK = text("INSERT INTO call_feedback (call_sid, account_sid, quality_score, issues) VALUES (:call, :account, "
                ":score, :issues) ON CONFLICT (call_sid) DO UPDATE SET quality_score = excluded.quality_score, "
                "issues = excluded.issues, date_updated = now() RETURNING call_sid, date_created")
# the calls import (and, from 0006, the voice status ingest, which confirms a provisional call).
CALL = text("INSERT INTO calls (sid, account_sid, start_time) VALUES (:sid, :account, :start) ON CONFLICT DO NOTHING")
PROVISIONAL_CALL = text("INSERT INTO calls (sid, account_sid, start_time, provisional) VALUES (:sid, :account, now(), "
                        "true) ON CONFLICT (sid) DO NOTHING")
CONFIRM = text("UPDATE calls SET start_time = :start, provisional = false WHERE sid = :sid")
# an operator's purge of calls; their feedback goes with them (ON DELETE CASCADE).
DELETE_CALL = text("DELETE FROM calls WHERE sid = :sid")
# api/summaries.py: the queued row; from 0004 its `created` event in the same transaction.
SUMMARY = text("INSERT INTO feedback_summaries (sid, account_sid, start_date, end_date, include_subaccounts) "
               "VALUES (:sid, :account, '2026-10-01', '2026-10-31', true)")
EVENT = text("INSERT INTO summary_events (summary_sid, kind, actor) VALUES (:sid, 'created', 'api')")


class Writer:
    """Threads running one era's writes in a loop until stopped; every error is kept."""

    def __init__(self, engine, era: int, calls: list[list[tuple[str, str]]]):
        self.engine, self.era, self.calls = engine, era, calls
        self.errors: list[str] = []
        self.done: list[float] = []  # when each write committed
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(len(calls))]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def run(self, index: int) -> None:
        rng = random.Random(index * 1000 + self.era)
        own = self.calls[index]  # each thread touches its own calls only: no FK race between threads
        while not self.stop.is_set():
            try:
                with self.engine.begin() as connection:
                    then = self.write(connection, rng, own)
                if then is not None:  # the request that follows, in a transaction of its own
                    with self.engine.begin() as connection:
                        then(connection)
                self.done.append(time.monotonic())
            except Exception as error:  # noqa: BLE001 - any error of the old release's code is the finding
                self.errors.append(f"era {self.era}: {type(error).__name__}: {error}".splitlines()[0])
                time.sleep(0.01)

    def write(self, connection, rng: random.Random, own: list[tuple[str, str]]):
        sid, token = rng.choice(ACCOUNTS)
        roll = rng.random()
        if roll < 0.25:
            if self.era < 5:
                row = connection.execute(AUTH_BEFORE_0005, {"sid": sid}).one()
                assert row.auth_token == token, "the previous release cannot authenticate"
            else:
                row = connection.execute(AUTH_FROM_0005, {"sid": sid}).one()
                assert row.auth_token_hash == hashlib.sha256(token.encode()).hexdigest()
        elif roll < 0.45:
            call = ("CA" + uuid.uuid4().hex, sid)
            start = FIRST_DAY + dt.timedelta(seconds=rng.randrange(20 * 86400))
            connection.execute(CALL, {"sid": call[0], "account": call[1], "start": start})
            own.append(call)
        elif roll < 0.75 and own:
            call, account = rng.choice(own)
            connection.execute(FEEDBACK, {"call": call, "account": account, "score": rng.randint(1, 5),
                                          "issues": rng.sample(FEEDBACK_ISSUES, rng.randint(0, 2))}).one()
        elif roll < 0.82 and own:
            call, _ = own.pop(rng.randrange(len(own)))
            connection.execute(DELETE_CALL, {"sid": call})
        elif roll < 0.92:
            summary = "FS" + uuid.uuid4().hex
            connection.execute(SUMMARY, {"sid": summary, "account": sid})
            if self.era >= 4:
                connection.execute(EVENT, {"sid": summary})
        elif self.era >= 6:
            # Feedback before its call's status callback: the feedback POST records a provisional call,
            # then Twilio's word confirms it in a request of its own. (In one transaction, as this test
            # once ran them, the two lock daily rows in an order the release never used: calls' row of
            # today, feedback's, then calls' of the call's day, against a purge's calls then feedback.)
            call = "CA" + uuid.uuid4().hex
            connection.execute(PROVISIONAL_CALL, {"sid": call, "account": sid})
            connection.execute(FEEDBACK, {"call": call, "account": sid, "score": rng.randint(1, 5), "issues": []})
            own.append((call, sid))
            start = FIRST_DAY + dt.timedelta(hours=rng.randrange(480))
            return lambda confirming: confirming.execute(CONFIRM, {"sid": call, "start": start})
        return None


def seed(engine) -> list[list[tuple[str, str]]]:
    with engine.begin() as connection:
        for sid, token in ACCOUNTS:
            connection.execute(text("INSERT INTO accounts (sid, parent_sid, friendly_name, auth_token) "
                                    "VALUES (:sid, :parent, 'migration test', :token)"),
                               {"sid": sid, "parent": PARENT_OF.get(sid), "token": token})
        # More accounts, so that 0005 converts them in several batches.
        connection.execute(text("INSERT INTO accounts (sid, friendly_name, auth_token) "
                                "SELECT 'AC' || md5('f' || g), 'filler', md5('ft' || g) FROM generate_series(1, 400) g"))
        connection.execute(text("""
            INSERT INTO calls (sid, account_sid, start_time)
            SELECT 'CA' || md5('c' || g), (ARRAY[:a0, :a1, :a2])[1 + g % 3],
                   :first + (g % 20) * interval '1 day' + (g * 37 % 86400) * interval '1 second'
            FROM generate_series(1, 3000) g"""),
                           {"a0": ACCOUNTS[0][0], "a1": ACCOUNTS[1][0], "a2": ACCOUNTS[2][0], "first": FIRST_DAY})
        connection.execute(text("""
            INSERT INTO call_feedback (call_sid, account_sid, quality_score, issues, date_created)
            SELECT sid, account_sid, 1 + abs(hashtext(sid)) % 5,
                   CASE abs(hashtext(sid || 'i')) % 3 WHEN 0 THEN ARRAY[]::text[] WHEN 1 THEN ARRAY['dropped-call']
                        ELSE ARRAY['audio-latency', 'one-way-audio'] END,
                   start_time + interval '1 hour'
            FROM calls WHERE abs(hashtext(sid)) % 3 > 0"""))
        calls = connection.execute(text("SELECT sid, account_sid FROM calls ORDER BY sid")).all()
    return [[tuple(c) for c in calls[i::2]] for i in range(2)]


# ---------------------------------------------------------------------------------------------------
# What must hold after each revision.

def _scalar_columns() -> list[tuple[str, str]]:
    """(rollup column, the condition on a feedback row it counts)"""
    columns = [(f"score_{n}", f"quality_score = {n}") for n in range(1, 6)]
    return columns + [("issue_" + issue.replace("-", "_"), f"'{issue}' = ANY(issues)") for issue in FEEDBACK_ISSUES]


def rollup_mismatches(connection) -> int:
    """(account, day) rows where daily rows plus pending deltas differ from the raw rows' aggregates."""
    deltas = connection.execute(text("SELECT to_regclass('calls_rollup_deltas')")).scalar() is not None
    pending_calls = "UNION ALL SELECT account_sid, day, calls FROM calls_rollup_deltas" if deltas else ""
    calls = f"""
        WITH r AS (SELECT account_sid, day, sum(calls) AS n FROM (SELECT account_sid, day, calls FROM daily_calls
                   {pending_calls}) x GROUP BY 1, 2 HAVING sum(calls) <> 0),
             d AS (SELECT account_sid, (start_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM calls
                   GROUP BY 1, 2)
        SELECT count(*) FROM ((TABLE r EXCEPT TABLE d) UNION ALL (TABLE d EXCEPT TABLE r)) z"""
    columns = _scalar_columns()
    names = ", ".join(c for c, _ in columns)
    old = [(c, w.replace("quality_score", "old_quality_score").replace("issues", "old_issues")) for c, w in columns]
    pending_feedback = ("UNION ALL SELECT account_sid, day, " + ", ".join(
        f"count(*) FILTER (WHERE {w}) - count(*) FILTER (WHERE {o})" for (_, w), (_, o) in zip(columns, old)) +
        " FROM feedback_rollup_deltas GROUP BY 1, 2") if deltas else ""
    feedback = f"""
        WITH r AS (SELECT account_sid, day, {", ".join(f"sum({c})" for c, _ in columns)}
                   FROM (SELECT account_sid, day, {names} FROM daily_feedback {pending_feedback}) x GROUP BY 1, 2
                   HAVING {" OR ".join(f"sum({c}) <> 0" for c, _ in columns)}),
             d AS (SELECT account_sid, (date_created AT TIME ZONE 'UTC')::date,
                          {", ".join(f"count(*) FILTER (WHERE {w})" for _, w in columns)}
                   FROM call_feedback GROUP BY 1, 2)
        SELECT count(*) FROM ((TABLE r EXCEPT TABLE d) UNION ALL (TABLE d EXCEPT TABLE r)) z"""
    return connection.execute(text(calls)).scalar() + connection.execute(text(feedback)).scalar()


def raw_pages(connection, table: str) -> bytes:
    """The table's main file as it is on disk, after a checkpoint has written every page there
    (pg_read_binary_file: no extension needed, which the embedded server does not ship)."""
    connection.execute(text("CHECKPOINT"))
    return connection.execute(text(f"SELECT pg_read_binary_file(pg_relation_filepath('{table}'))")).scalar()


def check(engine, revision: str) -> None:
    from shared.accounts.secrets import decrypt

    number = int(revision)
    with engine.connect() as connection:
        if number >= 3:
            assert rollup_mismatches(connection) == 0, f"rollups not exact after {revision}"
        columns = set(connection.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'accounts'")).scalars())
        for sid, token in ACCOUNTS:
            if number >= 5:
                hashed, ciphertext = connection.execute(text(
                    "SELECT auth_token_hash, auth_token_encrypted FROM accounts WHERE sid = :sid"), {"sid": sid}).one()
                assert hashed == hashlib.sha256(token.encode()).hexdigest() and decrypt(ciphertext) == token
        assert ("auth_token" in columns) == (number < 9)
        if number >= 9:
            pages = raw_pages(connection, "accounts")
            assert not any(token.encode() in pages for _, token in ACCOUNTS), "plaintext left in accounts' files"


def test_every_revision_applies_while_the_previous_release_writes(scratch, monkeypatch):
    from shared.migrations import rolling

    url, engine = scratch
    upgrade(url, REVISIONS[0])
    calls = seed(engine)
    batches: list[float] = []  # when each batch of a backfill ended
    in_batches = rolling.in_batches

    def timed(step):
        def run(connection, size):
            more = step(connection, size)
            batches.append(time.monotonic())
            return more
        in_batches(run)

    monkeypatch.setattr(rolling, "in_batches", timed)  # read by the revisions as alembic loads them
    for revision in REVISIONS[1:]:
        batches.clear()
        with Writer(engine, int(revision) - 1, calls) as writer:
            time.sleep(0.15)
            started = time.monotonic()
            # contract: the previous release's writer is the one running; it no longer reads what goes
            upgrade(url, revision, batch_size=BATCH, contract=True)
            finished = time.monotonic()
            time.sleep(0.15)  # the previous release's code against the new schema
        assert writer.errors == [], writer.errors[:5]
        assert current_revision(url) == revision
        during = sum(started <= t <= finished for t in writer.done)
        after = sum(t > finished for t in writer.done)
        assert after > 0, f"no write of the previous release after {revision}"
        if revision in ("0003", "0005"):  # the batched ones: no table lock across them, writes land between
            between = sum(batches[0] < t < batches[-1] for t in writer.done)
            print(f"{revision}: {len(batches)} batches in {batches[-1] - batches[0]:.3f} s, "
                  f"{between} writes of the previous release between them, {during} while it ran")
            assert len(batches) > 2 and between > 0
        check(engine, revision)
    # The head, against the reference the summaries are held to.
    from tests.direct_aggregates import compute as direct
    from worker.rollups import compute as rollups

    with Session(engine) as session:
        for sid, _ in ACCOUNTS:
            window = (sid, True, dt.date(2026, 9, 1), dt.date.today() + dt.timedelta(days=1))
            assert rollups(session, *window) == direct(session, *window)


def _statements_by_revision(statements: list[str]) -> list[list[str]]:
    """The statements between version stamps: one list per revision applied. Without the timeouts'
    lifts (UNLIMITED), which migrate's lock connection also sends before the first revision."""
    chunks, current = [], []
    for statement in statements:
        if re.match(r"\s*(INSERT INTO|UPDATE|DELETE FROM) alembic_version", statement):
            chunks.append(current)
            current = []
        elif statement not in UNLIMITED and not re.match(r"\s*(select pg_catalog|select current_schema|show |SELECT alembic_version|"
                          r"SELECT pg_try_advisory_xact_lock|SELECT 1$|"
                          r"CREATE TABLE alembic_version|SELECT to_regclass|select relname|"
                          r"SELECT pg_catalog)", statement, re.I):
            current.append(statement)
    return chunks


def test_every_revision_sets_a_lock_timeout_first_both_ways(scratch):
    url, _ = scratch
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        upgrade(url, contract=True)
        ups = _statements_by_revision(statements)
        statements.clear()
        command.downgrade(alembic_config(url), "base")
        downs = _statements_by_revision(statements)
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert len(ups) == len(downs) == len(REVISIONS)
    for revision, chunk in zip(REVISIONS + REVISIONS[::-1], ups + downs):
        assert chunk and chunk[0].startswith("SET LOCAL lock_timeout = '5s'"), (revision, chunk[:2])


def _hold(engine, statement: str, seconds: float) -> threading.Thread:
    held = threading.Event()

    def run():
        with engine.begin() as connection:
            connection.execute(text(statement))
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


def test_summaries_migrate_retries_a_revision_blocked_by_a_lock(scratch, settings_env, caplog):
    from cli.main import main

    url, engine = scratch
    upgrade(url, "0005")
    # 0006 adds a column to calls: it needs the table to itself, and a long transaction has read it.
    blocker = _hold(engine, "SELECT count(*) FROM calls", 1.0)
    settings_env(DATABASE_URL=url)
    with caplog.at_level(logging.WARNING, logger="summaries.migrate"):
        started = time.monotonic()
        assert main(["migrate", "--lock-timeout", "200ms", "--contract"]) == 0
    blocker.join()
    assert current_revision(url) == REVISIONS[-1]
    assert time.monotonic() - started > 1.0
    assert any("the revision after 0005 waited more than 200ms for a lock" in r.getMessage() and "attempt 1 of 5"
               in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_revision_blocked_for_longer_than_the_retries_fails_naming_where_it_stopped(scratch):
    url, engine = scratch
    upgrade(url, "0006")
    blocker = _hold(engine, "LOCK TABLE call_feedback IN ROW EXCLUSIVE MODE", 1.5)  # a writer
    with pytest.raises(MigrationBlocked, match="the database stays at 0006"):
        upgrade(url, lock_timeout="100ms", attempts=2, backoff_s=0.1)
    blocker.join()
    assert current_revision(url) == "0006"


def test_a_roles_statement_and_idle_timeouts_cut_no_migration(scratch):
    """Behind PgBouncer the timeouts are the role's (docs/pgbouncer.md), and `summaries migrate` may
    connect as that role: each revision, and the transaction holding migrate's own lock for the whole
    run, lift both, and wait for a lock only as long as their lock_timeout. The scratch database's
    settings stand in for a role's here."""
    url, engine = scratch
    upgrade(url, "0008")
    with engine.begin() as connection:
        for setting in ("statement_timeout", "idle_in_transaction_session_timeout"):
            connection.execute(text(f'ALTER DATABASE "{make_url(url).database}" SET {setting} = \'300ms\''))
    engine.dispose()  # new connections start with the database's settings
    # 0009 drops a column of accounts: it waits for this reader (which lifts the idle timeout for itself).
    blocker = _hold(engine, "SET LOCAL idle_in_transaction_session_timeout = 0; SELECT count(*) FROM accounts", 1.0)
    held_at = time.monotonic()
    assert upgrade(url, contract=True) == []
    blocker.join()
    assert time.monotonic() - held_at > 0.6  # it waited for the reader, twice as long as either timeout
    assert current_revision(url) == HEAD


def _revision(name: str):
    path = next((MIGRATIONS_DIR / "versions").glob(f"{name}_*.py"))
    spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_0009_waits_for_the_contract_step_and_clears_what_the_old_0005_left(scratch):
    url, engine = scratch
    upgrade(url, "0004")
    with engine.begin() as connection:
        for sid, token in ACCOUNTS[:2]:
            connection.execute(text("INSERT INTO accounts (sid, friendly_name, auth_token) VALUES (:s, 'x', :t)"),
                               {"s": sid, "t": token})
    assert upgrade(url) == WAITING  # 0005 applied by this run: the previous release may still read auth_token
    assert current_revision(url) == "0008"
    # As 0005 did before issue 15: the column dropped, its values still in every row's bytes.
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE accounts DROP COLUMN auth_token"))
    with engine.connect() as connection:
        assert all(token.encode() in raw_pages(connection, "accounts") for _, token in ACCOUNTS[:2])
    assert _revision("0009").contracts == "0005"
    assert upgrade(url) == WAITING  # a second run proves nothing about the old release: still not applied
    assert current_revision(url) == "0008"
    assert upgrade(url, contract=True) == []  # the operator says the rollout is complete
    assert current_revision(url) == HEAD
    with engine.connect() as connection:
        pages = raw_pages(connection, "accounts")
    assert not any(token.encode() in pages for _, token in ACCOUNTS[:2])


def test_two_migrates_at_once_take_turns(scratch):
    """Two machines' release steps, or a deploy retried while the first still runs: one waits for the
    other and finds the work done, instead of failing on alembic's version row."""
    url, engine = scratch
    upgrade(url, "0004")
    results, errors = [], []

    def run():
        try:
            results.append(upgrade(url))
        except Exception as error:  # noqa: BLE001  (collected for the assertion)
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and results == [WAITING, WAITING]
    assert current_revision(url) == "0008"


def test_a_fresh_database_migrates_without_waiting_for_a_lock(scratch, caplog):
    """0010 builds its index CONCURRENTLY, which waits for every transaction holding a snapshot:
    migrate's own lock connection held one (alembic's look at the catalog) and every fresh database
    (`make run`, each test run) waited out the lock timeout, 7 s, then retried."""
    url, _ = scratch
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="summaries.migrate"):
        assert upgrade(url) == []
    assert "waited more than" not in caplog.text and time.monotonic() - started < 5
    assert current_revision(url) == HEAD


def test_the_release_step_fails_while_this_releases_revisions_wait_behind_an_old_contract(scratch, settings_env,
                                                                                          capsys):
    """An install that never ran `--contract` after the release of 0009: this release's revisions
    (0010 on) wait behind it, and its code needs them (a status callback writes 0012's columns). The
    release step says so and fails, so the deploy stops before a process is replaced."""
    from cli.main import main

    url, _ = scratch
    upgrade(url, "0008")
    settings_env(DATABASE_URL=url)
    assert main(["migrate"]) == 2
    error = capsys.readouterr().err
    assert f"{', '.join(WAITING[1:])} wait behind the contract revision(s) 0009" in error and "--contract" in error
    assert current_revision(url) == "0008"
    assert main(["migrate", "--contract"]) == 0 and current_revision(url) == HEAD
