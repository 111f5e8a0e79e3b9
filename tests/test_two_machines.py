"""Two "machines" against one PostgreSQL and one Redis, as a deployment runs: separate data and
metrics directories, no shared files, distinct node names. A summary created on A's API is computed
by B's worker and its callback, signed with the account's token, is sent by B's callbacks worker.
And the liveness probe of a worker and the scheduler, as a container platform runs it."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import urllib.request
from base64 import b64encode
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from tests.processes import celery_beat, celery_worker, gunicorn, summaries_cli, wait_for
from tests.receiver import Receiver
from tests.support import make_calls, summaries_path

pytestmark = pytest.mark.slow


def machine(tmp_path, name: str) -> dict:
    """A machine's own directories; every other setting (the servers, the keys) is the deployment's."""
    root = tmp_path / name
    (root / "metrics").mkdir(parents=True)
    env = {"SUMMARIES_DATA_DIR": str(root / "data"), "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
           "CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8", "HEARTBEAT_INTERVAL_S": "0.3"}
    return {"root": root, "env": env}


def test_a_summary_created_on_one_machine_is_computed_and_called_back_from_another(tmp_path, engine, redis_client):
    a, b = machine(tmp_path, "a"), machine(tmp_path, "b")
    created = summaries_cli("accounts", "create", "--json", env={**os.environ, **a["env"]})
    assert created.returncode == 0, created.stderr
    account = json.loads(created.stdout)
    sid, token = account["sid"], account["auth_token"]
    make_calls(engine, SimpleNamespace(sid=sid), [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 4)

    receiver = Receiver()
    started = []
    try:
        api, base_url = gunicorn(a["root"], env=a["env"])
        started.append(api)
        for process in (celery_worker(b["root"], "summaries-b", queues="summaries", env=b["env"]),
                        celery_worker(b["root"], "callbacks-b", queues="callbacks", env=b["env"], pool="threads"),
                        celery_beat(b["root"], env=b["env"])):
            started.append(process)
        url = receiver.script("/done")
        form = {"StartDate": "2024-01-01", "EndDate": "2024-01-31", "StatusCallback": url}
        body = "&".join(f"{k}={urllib.request.quote(v, safe='')}" for k, v in form.items()).encode()
        request = urllib.request.Request(base_url + summaries_path(sid), data=body, headers={
            "Authorization": "Basic " + b64encode(f"{sid}:{token}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as response:
            summary_sid = json.loads(response.read())["sid"]
        (delivered,) = wait_for(lambda: receiver.requests_to("/done"), 60, 0.2, "B's callback")
    finally:
        for process in started:
            process.stop()
        receiver.close()

    assert delivered.form["FeedbackSummarySid"] == summary_sid and delivered.form["CallCount"] == "4"
    assert RequestValidator(token).validate(delivered.url, delivered.form, delivered.headers["X-Twilio-Signature"])
    with engine.connect() as connection:
        claimed_by = connection.execute(text("SELECT claimed_by FROM feedback_summaries WHERE sid = :s"),
                                        {"s": summary_sid}).scalar()
    assert claimed_by.startswith("summaries-b@")
    # Nothing was shared through files: no key written anywhere, each machine's metrics its own.
    assert not list(tmp_path.rglob("auth-token.keys"))
    assert list((a["root"] / "metrics").glob("*.db")) and list((b["root"] / "metrics").glob("*.db"))
    assert not (a["root"] / "data" / "health").exists()  # A runs no worker
    assert {p.name for p in (b["root"] / "data" / "health").iterdir()} >= {"summaries-b.json", "callbacks-b.json",
                                                                              "scheduler.json"}


def test_the_liveness_probe_sees_a_live_a_hung_and_a_dead_worker_and_scheduler(tmp_path, engine, redis_client):
    m = machine(tmp_path, "m")
    env = {**os.environ, **m["env"]}
    worker = celery_worker(m["root"], "callbacks-m", queues="callbacks", env=m["env"], pool="threads")
    beat = celery_beat(m["root"], env=m["env"])

    def probe(name: str):
        return summaries_cli("health", name, "--max-age", "2", env=env)

    try:
        assert probe("worker").returncode == 1  # no such process here: no heartbeat, not alive
        for name in ("callbacks-m", "scheduler"):
            wait_for(lambda: probe(name).returncode == 0, 60, 0.3, f"{name} to be alive")
        worker.kill(signal.SIGSTOP)  # hung: its loop stops beating
        wait_for(lambda: probe("callbacks-m").returncode == 1, 10, 0.3, "the hung worker to fail its probe")
        assert "last heartbeat" in probe("callbacks-m").stderr
        worker.kill(signal.SIGCONT)
        wait_for(lambda: probe("callbacks-m").returncode == 0, 10, 0.3, "the worker to beat again")
        worker.kill(signal.SIGKILL)
        beat.kill(signal.SIGKILL)
        dead = probe("scheduler")
        assert dead.returncode == 1 and "exited" in dead.stderr, dead.stderr
    finally:
        worker.stop()
        beat.stop()
