"""Crash tests with real processes: each test names what it kills and what it checks.

Workers and the scheduler are real `celery` processes on the test PostgreSQL and Redis, with a
3 s lease and a 1 s sweep (conftest sets SUMMARY_LEASE_S and SWEEP_INTERVAL_S).
"""

from __future__ import annotations

import datetime as dt
import signal

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from api.app import App, Services
from cli.migrate import upgrade
from cli.seed import seed
from shared.platform.db import sqlalchemy_url
from shared.platform.queue import enqueue_summary
from tests.processes import DisposablePostgres, celery_beat, celery_worker, wait_for
from tests.reference import AGGREGATE_FIELDS, expected_for
from tests.support import FORM, WsgiClient, make_account, make_calls, post_summary, queued_messages, summaries_path

pytestmark = pytest.mark.slow


def statuses(engine, sids: list[str]) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT sid, status FROM feedback_summaries WHERE sid = ANY(:s)"),
                                  {"s": sids})
        return dict(rows.all())


def scalar(engine, sql: str):
    # A new transaction each time: pg_stat_activity is a snapshot that a transaction keeps.
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def summary_row(engine, sid: str) -> dict:
    with engine.connect() as connection:
        return connection.execute(text("SELECT * FROM feedback_summaries WHERE sid = :sid"), {"sid": sid}).one()._asdict()


def create(client, account, n: int = 1) -> list[str]:
    sids = []
    for _ in range(n):
        response = post_summary(client, account)
        assert response.status == 201
        sids.append(response.json["sid"])
    return sids


def all_completed(engine, sids: list[str]):
    return lambda: set(statuses(engine, sids).values()) == {"completed"}


@pytest.fixture
def processes():
    started = []
    yield started
    for process in started:
        process.stop()


def test_sigkill_a_worker_mid_summary_and_another_worker_completes_it(engine, client, redis_client, tmp_path,
                                                                      processes):
    """Kills: worker A's whole process group with SIGKILL while its summary is in-progress and its
    aggregate query is running (held on a table lock so the moment is certain, not a race).
    Checks: the summary stays in-progress with A's claim; once the lease expires the sweeper
    re-sends it, worker B takes the claim over, and it completes with the exact numbers."""
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, d, tzinfo=dt.timezone.utc) for d in range(1, 29)])
    locker = engine.connect()
    locker.begin()
    locker.execute(text("LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE"))
    try:
        worker_a = celery_worker(tmp_path, "crash-a")
        processes.append(worker_a)
        (sid,) = create(client, account)
        waiting = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock' AND query ILIKE '%FROM daily_calls%'")
        wait_for(lambda: scalar(engine, waiting) == 1, 30, what="A's aggregate query to run")
        claimed = summary_row(engine, sid)
        assert claimed["status"] == "in-progress" and claimed["claimed_by"].startswith("crash-a@")
        worker_a.kill(signal.SIGKILL)
        assert worker_a.popen.returncode == -signal.SIGKILL
    finally:
        locker.rollback()
        locker.close()
    assert summary_row(engine, sid)["status"] == "in-progress"

    processes.extend([celery_worker(tmp_path, "crash-b"), celery_beat(tmp_path)])
    wait_for(all_completed(engine, [sid]), 60, 0.2, "the summary to complete on worker B")
    done = summary_row(engine, sid)
    assert done["claimed_by"].startswith("crash-b@") and done["attempts"] == 2
    fetched = client.get(summaries_path(account.sid, sid), auth=(account.sid, account.auth_token)).json
    assert {k: fetched[k] for k in AGGREGATE_FIELDS} == expected_for(engine, account.sid, False, dt.date(2024, 1, 1),
                                                                    dt.date(2024, 1, 31))


def test_redis_emptied_with_summaries_queued_and_a_failed_enqueue_all_complete(engine, client, redis_client,
                                                                               tmp_path, processes):
    """Kills: every message, with FLUSHALL on the broker while ten summaries wait in the queue, and
    the message of an eleventh whose enqueue failed at create time (Redis unreachable then).
    Checks: the sweeper re-sends all eleven and a worker completes each of them."""
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)])
    sids = create(client, account, 10)
    services = client.app.services
    unreachable = WsgiClient(App(Services(settings=services.settings, sessions=services.sessions,
                                          enqueue_summary=lambda sid: False, ping_redis=services.ping_redis)))
    sids += create(unreachable, account)
    assert len(queued_messages(redis_client)) == 10
    redis_client.flushall()
    assert queued_messages(redis_client) == [] and set(statuses(engine, sids).values()) == {"queued"}

    processes.extend([celery_worker(tmp_path, "flushed"), celery_beat(tmp_path)])
    wait_for(all_completed(engine, sids), 60, 0.2, "all eleven summaries to complete")


def test_postgresql_stopped_under_a_running_worker_and_started_again_loses_nothing(redis_client, tmp_path,
                                                                                   processes):
    """Kills: PostgreSQL itself (a fast shutdown of a server of this test's own, since stopping the
    shared one would stop the other tests) while a worker is computing a batch of summaries.
    Checks: the worker hits the outage and retries; once PostgreSQL is back every summary is
    completed, none failed, none stuck, none lost."""
    postgres = DisposablePostgres(tmp_path / "pg")
    try:
        upgrade(postgres.url)
        engine = create_engine(sqlalchemy_url(postgres.url))
        account = make_account(engine)
        with engine.connect() as connection:
            seed(connection, account.sid, 20_000, 60)
        # The summaries are accepted now; their messages are sent below, some while PostgreSQL is down.
        client = WsgiClient(_app_on(engine, enqueue=lambda sid: False))
        today = dt.date.today()
        form = {"StartDate": str(today - dt.timedelta(days=60)), "EndDate": str(today)}
        sids = [client.post(summaries_path(account.sid), form=form, auth=(account.sid, account.auth_token)).json["sid"]
                for _ in range(40)]
        env = {"DATABASE_URL": postgres.url}
        worker = celery_worker(tmp_path, "pg-outage", env=env)
        processes.append(worker)
        for sid in sids[:5]:
            enqueue_summary(sid)
        wait_for(lambda: "completed" in statuses(engine, sids).values(), 60, 0.05, "the first summary to complete")
        engine.dispose()
        postgres.stop()
        for sid in sids[5:]:
            enqueue_summary(sid)  # Redis is up: the worker takes them and finds no database
        wait_for(lambda: "transient database error" in worker.output(), 30, 0.2, "the worker to hit the outage")
        postgres.start()
        processes.append(celery_beat(tmp_path, env))  # the sweeper, for anything whose retries ran out
        wait_for(all_completed(engine, sids), 120, 0.5, "every summary to complete after the restart")
        assert "summary failed" not in worker.output()
    finally:
        for process in processes:
            process.stop()
        processes.clear()
        postgres.close()


def _app_on(engine, enqueue) -> App:
    from api.factory import create_app

    services = create_app().services
    return App(Services(settings=services.settings, sessions=sessionmaker(engine, expire_on_commit=False),
                        enqueue_summary=enqueue, ping_redis=services.ping_redis))



def test_a_worker_child_stuck_on_a_lock_is_replaced_and_its_summary_still_completes(engine, client, redis_client,
                                                                                    tmp_path):
    """A computation queued behind a lock nobody releases: its prefork child is killed at twice the
    lease (SUMMARY_LEASE_S=3 here) and replaced, the sweeper sends the summary again, and it completes
    once the lock goes; the worker itself never stops."""
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 2)
    # The time limit is the backstop where no statement timeout cancels the wait first.
    worker = celery_worker(tmp_path, "stuck", queues="summaries", concurrency=1,
                           env={"DATABASE_STATEMENT_TIMEOUT_MS": "0"})
    beat = celery_beat(tmp_path)
    locker = engine.connect()
    locker.begin()
    locker.execute(text("LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE"))
    try:
        wait_for(lambda: "ready." in worker.output(), 30, 0.2, "the worker")
        form = {"StartDate": "2024-01-01", "EndDate": "2024-01-31"}
        sid = client.post(summaries_path(account.sid), form=form, auth=(account.sid, account.auth_token)).json["sid"]
        wait_for(lambda: "Hard time limit (6s) exceeded" in worker.output(), 60, 0.2, "the child to be killed")
    finally:
        locker.rollback()
        locker.close()
    try:
        wait_for(lambda: statuses(engine, [sid])[sid] == "completed", 60, 0.2, "the summary to complete")
        assert worker.popen.poll() is None
    finally:
        worker.stop()
        beat.stop()


def test_postgresql_restarted_under_the_api_answers_every_request_after_it(redis_client, tmp_path):
    """Kills: PostgreSQL (a fast shutdown and a start of a server of this test's own) while the API's
    pool holds connections to it. Checks: every request after the restart succeeds, on each of the
    three hot paths: the pool sees the closed connections when it hands them out (no pre-ping round
    trip, shared/platform/db.py) and replaces them, so no request fails on a stale one."""
    from api.factory import create_app
    from shared.accounts.sids import CALL, new_sid
    from shared.platform.db import make_engine
    from shared.signing import signature
    from tests.support import feedback_path

    postgres = DisposablePostgres(tmp_path / "pg")
    try:
        upgrade(postgres.url)
        engine = make_engine(postgres.url)
        account = make_account(engine)
        calls = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 3)
        services = create_app().services
        client = WsgiClient(App(Services(settings=services.settings, enqueue_summary=lambda sid: False,
                                         sessions=sessionmaker(engine, expire_on_commit=False),
                                         ping_redis=services.ping_redis)))
        auth = (account.sid, account.auth_token)

        def requests() -> list[int]:
            statuses = []
            for call_sid in calls:
                statuses.append(client.post(summaries_path(account.sid), form=FORM, auth=auth).status)
                statuses.append(client.post(feedback_path(account.sid, call_sid), form={"QualityScore": "4"},
                                            auth=auth).status)
                form = {"AccountSid": account.sid, "CallSid": new_sid(CALL), "CallStatus": "initiated"}
                statuses.append(client.post("/twilio/voice/status", form=form, headers={
                    "Host": "localhost", "X-Twilio-Signature": signature(
                        account.auth_token, "http://localhost/twilio/voice/status", form)}).status)
            return statuses

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:  # several pooled connections, all of them stale after the restart
            assert set().union(*pool.map(lambda _: set(requests()), range(4))) == {201, 200, 204}
        assert engine.pool.checkedin() >= 2
        postgres.stop()
        postgres.start()
        for _ in range(3):
            assert set(requests()) == {201, 200, 204}
    finally:
        postgres.close()
