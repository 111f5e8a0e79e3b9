"""Operators: a real system (gunicorn with two processes, a summaries worker, a callbacks worker)
driven into every state (queued, in progress, failed summary, failed delivery); then what
`status`, `jobs` and `show` print, what /metrics exports, `retry` and `purge`, the JSON logs, and
the event stream and `celery inspect ping` that Flower relies on."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import threading
import urllib.request

import pytest
import requests
from sqlalchemy import text

from api.app import App, Services
from tests.processes import ROOT, celery_worker, gunicorn, summaries_cli, wait_for
from tests.receiver import Receiver, Reply
from tests.support import FORM, WsgiClient, backdate, make_account, make_calls, summaries_path, summary_in

pytestmark = pytest.mark.slow
# A lease longer than the test: the summary held on a lock below must not show as an expired lease
# however slowly a loaded machine runs the commands that look at it (the run's default is 3 s). Its
# computation must stay running for as long, not be cancelled by the statement timeout and retried.
ENV = {"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8", "CALLBACK_MAX_ATTEMPTS": "1", "SUMMARY_LEASE_S": "120",
       "DATABASE_STATEMENT_TIMEOUT_MS": "120000"}


def status_of(engine, sid: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(text("SELECT status FROM feedback_summaries WHERE sid = :s"), {"s": sid}).scalar()


@pytest.fixture
def system(tmp_path, engine, redis_client):
    # The system's own metrics directory: its counters start at zero, apart from this test process's.
    (tmp_path / "metrics").mkdir()
    env = {**ENV, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    web, base_url = gunicorn(tmp_path, workers=2, env=env)
    workers = [celery_worker(tmp_path, "ops-summaries", queues="summaries", concurrency=2, env=env),
               celery_worker(tmp_path, "ops-callbacks", queues="callbacks", concurrency=4, env=env, pool="threads")]
    for worker in workers:
        wait_for(lambda: "ready." in worker.output(), 30, 0.2, f"{worker.name} to be ready")
    yield {"url": base_url, "web": web, "workers": workers}
    for process in (web, *workers):
        process.stop()


def test_every_state_shows_in_status_jobs_show_and_metrics(system, engine, client, tmp_path):
    receiver = Receiver()
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 4)
    broken = make_account(engine)
    api = requests.Session()
    api.auth = (account.sid, account.auth_token)
    base = system["url"] + summaries_path(account.sid)

    # A failed delivery: the summary completes, its callback gets a 404.
    hook = receiver.script("/hook", Reply(404, body=b"no such hook"))
    delivered_badly = api.post(base, data={**FORM, "StatusCallback": hook}).json()["sid"]
    wait_for(lambda: _delivery_state(engine, delivered_badly) == "failed", 30, what="the failed delivery")

    # A failed summary: its account's rollup corrupted by hand (a negative count), a permanent error.
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO daily_feedback (account_sid, day, score_1) VALUES (:a, '2024-01-05', -1)"),
                           {"a": broken.sid})
    failed = client.post(summaries_path(broken.sid), form=FORM, auth=(broken.sid, broken.auth_token)).json["sid"]
    wait_for(lambda: status_of(engine, failed) == "failed", 30, what="the failed summary")

    # A queued summary whose message never reached Redis (no scheduler runs here to re-send it).
    services = client.app.services
    no_redis = WsgiClient(App(Services(settings=services.settings, sessions=services.sessions,
                                       enqueue_summary=lambda sid: False, ping_redis=services.ping_redis)))
    queued = no_redis.post(summaries_path(account.sid), form=FORM, auth=(account.sid, account.auth_token)).json["sid"]

    # An in-progress summary: its computation held on a table lock.
    locker = engine.connect()
    locker.begin()
    locker.execute(text("LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE"))
    try:
        running = api.post(base, data=FORM).json()["sid"]
        wait_for(lambda: status_of(engine, running) == "in-progress", 30, what="the claim")

        found = json.loads(summaries_cli("status", "--json").stdout)
        assert found["summaries"]["queued"] == 1 and found["summaries"]["in-progress"] == 1
        assert found["summaries"]["failed"] == 1 and found["summaries"]["completed"] == 1
        assert found["summaries"]["oldest_queued_age_s"] >= 0 and found["summaries"]["expired_leases"] == 0
        assert found["deliveries"]["failed"] == 1
        assert found["queues"]["summaries"]["depth"] == 0
        names = {w["name"].split("@")[0]: w for w in found["workers"]}
        assert {"ops-summaries", "ops-callbacks"} <= set(names)
        assert [t["sid"] for t in names["ops-summaries"]["running"]] == [running]
        table = summaries_cli("status").stdout
        assert "in-progress" in table and f"summaries.compute {running}" in table

        metrics = _scrape(system["url"])
        assert metrics[("cfs_summaries", (("status", "queued"),))] == 1
        assert metrics[("cfs_summaries", (("status", "in-progress"),))] == 1
        assert metrics[("cfs_callback_deliveries", (("state", "failed"),))] == 1
        assert metrics[("cfs_queue_depth", (("queue", "summaries"),))] == 0
        assert ("cfs_queue_oldest_message_age_seconds", (("queue", "callbacks"),)) in metrics
    finally:
        locker.rollback()
        locker.close()
        receiver.close()
    wait_for(lambda: status_of(engine, running) == "completed", 30, what="the held summary to complete")

    metrics = _scrape(system["url"])
    # The API's counters are summed over both gunicorn processes; the workers' over their pool.
    route = "/2010-04-01/Accounts/{AccountSid}/Calls/FeedbackSummary.json"
    assert metrics[("cfs_http_requests_total", (("method", "POST"), ("route", route), ("status", "201")))] == 2
    assert metrics[("cfs_summaries_created_total", ())] == 2  # the other two went through the in-process app
    assert metrics[("cfs_summaries_finished_total", (("status", "failed"),))] == 1
    assert metrics[("cfs_summaries_finished_total", (("status", "completed"),))] == 2
    assert metrics[("cfs_callback_attempts_total", (("outcome", "failed"),))] == 1
    assert metrics[("cfs_summary_compute_seconds_count", ())] == 2
    assert metrics[("cfs_callback_attempt_seconds_count", ())] == 1
    assert ("cfs_http_request_duration_seconds_bucket", (("le", "0.05"), ("method", "POST"), ("route", route))) \
        in metrics

    jobs = json.loads(summaries_cli("jobs", "--status", "failed", "--json").stdout)
    assert [j["sid"] for j in jobs] == [failed] and jobs[0]["failure_reason"]
    listing = summaries_cli("jobs", "--account", account.sid).stdout
    assert all(sid in listing for sid in (delivered_badly, queued, running)) and failed not in listing

    shown = summaries_cli("show", delivered_badly).stdout
    request_id = _request_id_of(engine, delivered_badly)
    assert re.search(rf"created by {request_id}", shown)
    assert re.search(r"in-progress by ops-summaries@", shown) and re.search(r"completed by ops-summaries@", shown)
    assert "callback attempt 1: failed" in shown and "status_code=404" in shown and "no such hook" in shown
    failed_timeline = json.loads(summaries_cli("show", failed, "--json").stdout)[failed]
    assert [e["what"] for e in failed_timeline["timeline"]] == ["created", "in-progress", "failed"]
    assert failed_timeline["timeline"][-1]["reason"] == failed_timeline["failure_reason"]

    # The operator repairs the data and retries; then purges what is left failed.
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM daily_feedback WHERE account_sid = :a"), {"a": broken.sid})
    retried = summaries_cli("retry", failed, queued)
    assert f"{failed}: queued" in retried.stdout and f"{queued}: not failed" in retried.stdout
    wait_for(lambda: status_of(engine, failed) == "completed", 30, what="the retried summary")
    timeline = [e["what"] for e in json.loads(summaries_cli("show", failed, "--json").stdout)[failed]["timeline"]]
    assert timeline == ["created", "in-progress", "failed", "queued", "in-progress", "completed"]
    assert summaries_cli("purge", "--failed", "--older-than", "0", stdin="n\n").stdout.strip() == "nothing to purge"


def test_purge_asks_before_deleting_failed_summaries(engine):
    account = make_account(engine)
    backdate(engine, "feedback_summaries", [summary_in(engine, account, "failed")], 3)
    kept = summaries_cli("purge", "--failed", "--older-than", "7", "--yes")
    assert "deleted 0" in kept.stdout
    declined = summaries_cli("purge", "--failed", "--older-than", "2", stdin="n\n")
    assert declined.returncode == 2 and "nothing was deleted" in declined.stderr
    assert "deleted 1 failed summaries" in summaries_cli("purge", "--failed", "--older-than", "2", stdin="y\n").stdout


def test_purge_deletes_more_failed_summaries_than_one_message_holds_parameters(engine):
    """An IN list binds one parameter per SID, and a protocol message holds 65,535."""
    account = make_account(engine)
    failed = summary_in(engine, account, "failed")
    # 70,000 failures through the owner would take minutes: copies of one it failed, made by
    # PostgreSQL (the tests' one bulk write; shared/summaries/lifecycle.py writes every other summary).
    with engine.begin() as connection:
        copies = connection.execute(text(
            "INSERT INTO feedback_summaries SELECT (jsonb_populate_record(s, jsonb_build_object('sid', "
            "'FS' || md5(g::text)))).* FROM feedback_summaries s, generate_series(2, 70000) g WHERE s.sid = :sid "
            "RETURNING sid"), {"sid": failed}).scalars().all()
    backdate(engine, "feedback_summaries", [failed, *copies], 3)
    purged = summaries_cli("purge", "--failed", "--older-than", "2", "--yes")
    assert purged.returncode == 0 and "deleted 70000 failed summaries" in purged.stdout, purged.stderr


def test_logs_are_json_with_the_job_and_request_ids_and_never_a_token(system, engine):
    account = make_account(engine)
    api = requests.Session()
    api.auth = (account.sid, account.auth_token)
    response = api.post(system["url"] + summaries_path(account.sid), data=FORM)
    sid, request_id = response.json()["sid"], response.headers["Twilio-Request-Id"]
    wait_for(lambda: status_of(engine, sid) == "completed", 30, what="the summary")
    wait_for(lambda: "summary completed" in system["workers"][0].output(), 10, what="the log line")
    lines = [json.loads(line) for process in (system["web"], *system["workers"])
             for line in process.output().splitlines() if line.startswith("{")]
    about_request = [line for line in lines if line.get("request_id") == request_id]
    assert {"request"} <= {line["message"] for line in about_request}
    assert all(line["account_sid"] == account.sid for line in about_request if line["message"] == "request")
    about_job = [line for line in lines if line.get("summary_sid") == sid and line["logger"].startswith("worker")]
    assert about_job and all(line.get("task_id") for line in about_job)
    everything = "".join(process.output() for process in (system["web"], *system["workers"]))
    assert account.auth_token not in everything


def test_flower_sees_workers_and_task_events(system, engine, client):
    from shared.platform.queue import get_celery

    ping = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.celery_app", "inspect", "ping", "--timeout",
                           "5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ping.returncode == 0 and "ops-summaries@" in ping.stdout and "pong" in ping.stdout

    app = get_celery()
    seen, ready, receivers = [], threading.Event(), []

    def consume():
        with app.connection() as connection:
            receiver = app.events.Receiver(connection, handlers={"*": seen.append})
            receivers.append(receiver)
            ready.set()
            try:
                receiver.capture(limit=None, timeout=20, wakeup=True)
            except Exception:  # the test is over and its broker connection gone: stop quietly
                pass

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    ready.wait(10)
    # The workers answer the receiver's wake-up with a heartbeat: from then on it is bound and hears all.
    wait_for(lambda: any(e.get("type") == "worker-heartbeat" for e in list(seen)), 20, 0.1, "a heartbeat")
    account = make_account(engine)
    sid = client.post(summaries_path(account.sid), form=FORM, auth=(account.sid, account.auth_token)).json["sid"]
    done = wait_for(lambda: [e for e in list(seen) if e.get("type") == "task-succeeded"], 20, 0.1,
                    "a task-succeeded event")
    received = [e for e in seen if e.get("type") == "task-received" and sid in str(e.get("args"))]
    receivers[0].should_stop = True
    consumer.join(timeout=10)
    assert received and received[0]["name"] == "summaries.compute" and done


def _scrape(base_url: str) -> dict[tuple, float]:
    """/metrics parsed by prometheus_client's own parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    exposition = urllib.request.urlopen(base_url + "/metrics", timeout=10).read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(exposition) for sample in family.samples}


def _delivery_state(engine, sid: str) -> str | None:
    with engine.connect() as connection:
        return connection.execute(text("SELECT state FROM callback_deliveries WHERE summary_sid = :s"),
                                  {"s": sid}).scalar()


def _request_id_of(engine, sid: str) -> str:
    with engine.connect() as connection:
        return connection.execute(text("SELECT request_id FROM feedback_summaries WHERE sid = :s"),
                                  {"s": sid}).scalar()
