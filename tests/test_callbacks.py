"""Status callbacks end to end: real workers compute and deliver to a real HTTP receiver on a
loopback port; the official library's RequestValidator checks every signature."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from shared.platform.config import Settings
from tests.processes import celery_beat, celery_worker, summaries_cli, wait_for
from tests.receiver import Receiver, Reply
from tests.support import FORM, make_account, make_calls, post_summary, summaries_path

pytestmark = pytest.mark.slow

SPEC_PARAMS = {"AccountSid", "FeedbackSummarySid", "Status", "StartDate", "EndDate", "IncludeSubaccounts",
               "CallCount", "CallFeedbackCount", "QualityScoreAverage", "QualityScoreMedian",
               "QualityScoreStandardDeviation", "Issues", "DateCreated", "DateUpdated"}
# Short schedules for the tests; loopback allowed, as a developer would allow it.
WORKER_ENV = {"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8", "CALLBACK_MAX_ATTEMPTS": "3",
              "CALLBACK_BACKOFF_INITIAL_S": "0.2", "CALLBACK_BACKOFF_MAX_S": "3", "CALLBACK_CONNECT_TIMEOUT_S": "1",
              "CALLBACK_READ_TIMEOUT_S": "1", "CALLBACK_CIRCUIT_THRESHOLD": "50", "CALLBACK_MAX_IN_FLIGHT_PER_HOST": "2"}


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def account(engine, redis_client):
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)] * 3)
    return account


@pytest.fixture
def start(tmp_path):
    """Start a worker (both queues, threads pool) and the scheduler, with WORKER_ENV and overrides."""
    started = []

    def _start(queues: str = "summaries,callbacks", beat: bool = True, name: str | None = None,
               concurrency: int = 8, **overrides):
        env = {**WORKER_ENV, **overrides}
        worker = celery_worker(tmp_path, name or f"cb{len(started)}", queues=queues, concurrency=concurrency,
                               env=env, pool="threads")
        started.append(worker)
        if beat:
            started.append(celery_beat(tmp_path, env))
        return worker

    yield _start
    for process in started:
        process.stop()


def create(client, account, url: str, method: str = "POST") -> str:
    response = post_summary(client, account, {**FORM, "StatusCallback": url, "StatusCallbackMethod": method})
    assert response.status == 201, response.body
    return response.json["sid"]


def delivery(engine, sid: str) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM callback_deliveries WHERE summary_sid = :s"), {"s": sid}).first()
    return row._asdict() if row else None


def attempts(engine, sid: str) -> list[dict]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM callback_attempts WHERE summary_sid = :s ORDER BY number"),
                                  {"s": sid})
        return [row._asdict() for row in rows]


def settled(engine, sid: str, state: str, timeout_s: float = 30) -> dict:
    found = wait_for(lambda: (d := delivery(engine, sid)) and d["state"] != "pending" and d, timeout_s, 0.1,
                     f"the delivery of {sid} to settle")
    assert found["state"] == state, (found, attempts(engine, sid))
    return found


def test_post_carries_the_spec_parameters_signed_for_the_official_validator(engine, client, account, receiver,
                                                                           start):
    start()
    url = receiver.script("/post")
    sid = create(client, account, url)
    settled(engine, sid, "delivered")
    (request,) = receiver.requests_to("/post")
    assert request.method == "POST" and set(request.form) == SPEC_PARAMS
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert RequestValidator(account.auth_token).validate(request.url, request.form,
                                                         request.headers["X-Twilio-Signature"])
    summary = client.get(summaries_path(account.sid, sid), auth=(account.sid, account.auth_token)).json
    assert request.form["Status"] == "completed" and request.form["FeedbackSummarySid"] == sid
    assert request.form["CallCount"] == "3" and request.form["QualityScoreAverage"] == ""
    assert json.loads(request.form["Issues"]) == summary["issues"] == []
    assert (request.form["DateCreated"], request.form["DateUpdated"]) == (summary["date_created"],
                                                                         summary["date_updated"])
    assert request.headers["User-Agent"].startswith("CallFeedbackSummaries")
    assert len(request.headers["I-Twilio-Idempotency-Token"]) >= 32
    (attempt,) = attempts(engine, sid)
    assert (attempt["outcome"], attempt["status_code"], attempt["response_excerpt"]) == ("delivered", 200, "ok")
    assert attempt["latency_ms"] >= 0


def test_get_carries_the_parameters_in_the_query_string_signed_over_the_full_url(engine, client, account,
                                                                                receiver, start):
    start()
    url = receiver.script("/get") + "?tenant=acme"
    sid = create(client, account, url, "GET")
    settled(engine, sid, "delivered")
    (request,) = receiver.requests_to("/get")
    assert request.method == "GET" and set(request.query) == SPEC_PARAMS | {"tenant"}
    assert RequestValidator(account.auth_token).validate(request.url, {}, request.headers["X-Twilio-Signature"])
    assert not RequestValidator("f" * 32).validate(request.url, {}, request.headers["X-Twilio-Signature"])


def test_500_500_200_is_delivered_on_the_third_attempt_with_one_idempotency_token(engine, client, account,
                                                                                 receiver, start):
    start()
    url = receiver.script("/flaky", Reply(500), Reply(500, body=b"still down"), Reply(200))
    sid = create(client, account, url)
    settled(engine, sid, "delivered")
    recorded = attempts(engine, sid)
    assert [(a["number"], a["status_code"], a["outcome"]) for a in recorded] == [
        (1, 500, "retry"), (2, 500, "retry"), (3, 200, "delivered")]
    assert recorded[1]["response_excerpt"] == "still down"
    tokens = {r.headers["I-Twilio-Idempotency-Token"] for r in receiver.requests_to("/flaky")}
    assert len(tokens) == 1 and len(receiver.requests_to("/flaky")) == 3


def test_404_fails_at_once_with_one_attempt(engine, client, account, receiver, start):
    start()
    sid = create(client, account, receiver.script("/gone", Reply(404, body=b"no such hook")))
    found = settled(engine, sid, "failed")
    assert found["attempts"] == 1 and found["last_error"] == "HTTP 404"
    assert [(a["status_code"], a["outcome"]) for a in attempts(engine, sid)] == [(404, "failed")]
    assert client.get(summaries_path(account.sid, sid), auth=(account.sid, account.auth_token)).json["status"] \
        == "completed"  # the callback's outcome never changes the summary


def test_a_redirect_is_not_followed(engine, client, account, receiver, start):
    start()
    target = receiver.script("/elsewhere")
    sid = create(client, account, receiver.script("/moved", Reply(302, headers={"Location": target})))
    settled(engine, sid, "failed")
    assert receiver.requests_to("/elsewhere") == []


def test_a_timeout_is_retried(engine, client, account, receiver, start):
    start()
    sid = create(client, account, receiver.script("/slow-once", Reply(200, delay_s=2.5), Reply(200)))
    settled(engine, sid, "delivered")
    first, second = attempts(engine, sid)
    assert first["status_code"] is None and "Timeout" in first["error"] and first["outcome"] == "retry"
    assert second["status_code"] == 200


def test_a_refused_connection_is_retried_until_the_last_attempt_then_failed(engine, client, account, start):
    from tests.support import free_port

    start()
    sid = create(client, account, f"http://127.0.0.1:{free_port()}/nobody-listens")
    found = settled(engine, sid, "failed")
    recorded = attempts(engine, sid)
    assert found["attempts"] == 3 and [a["outcome"] for a in recorded] == ["retry", "retry", "failed"]
    assert all("ConnectionError" in a["error"] for a in recorded)


def test_429_with_retry_after_waits_that_long(engine, client, account, receiver, start):
    start()
    sid = create(client, account, receiver.script("/busy", Reply(429, headers={"Retry-After": "2"}), Reply(200)))
    settled(engine, sid, "delivered")
    first, second = receiver.requests_to("/busy")
    assert second.at - first.at >= 1.9  # our own backoff would have been 0.1 to 0.2 s


def test_a_slow_receiver_does_not_hold_up_deliveries_to_others(engine, client, account, receiver, start):
    start()
    slow = [create(client, account, receiver.script("/slow", Reply(200, delay_s=0.9))) for _ in range(6)]
    # Another address (limits and circuits are per address connected to, not per host name).
    other = Receiver("127.0.0.2")
    fast = [create(client, account, other.script("/fast")) for _ in range(3)]
    for sid in fast:
        settled(engine, sid, "delivered")
    for sid in slow:
        settled(engine, sid, "delivered")
    with engine.connect() as connection:
        times = dict(connection.execute(text("SELECT summary_sid, delivered_at FROM callback_deliveries")).all())
    other.close()
    # At most two attempts at a time go to the slow address, so the fast one's three never wait for it.
    assert max(times[s] for s in fast) < sorted(times[s] for s in slow)[2]


def finished(worker, task: str) -> int:
    """How many runs of `task` the worker has logged as finished."""
    return sum(1 for line in worker.output().splitlines() if f"{task}[" in line and "succeeded" in line)


def test_a_summary_deleted_before_its_retry_sends_nothing_more(engine, client, account, receiver, start):
    worker = start()
    sid = create(client, account, receiver.script("/deleted", Reply(500), Reply(200)))
    wait_for(lambda: len(attempts(engine, sid)) == 1, 30, what="the first attempt")
    assert client.delete(summaries_path(account.sid, sid), auth=(account.sid, account.auth_token)).status == 204
    assert delivery(engine, sid) is None  # the pending delivery went with its summary
    # The retry's own message has run (and found nothing), and the sweeper has looked twice since.
    sweeps = finished(worker, "summaries.sweep")
    wait_for(lambda: finished(worker, "callbacks.deliver") >= 2 and finished(worker, "summaries.sweep") >= sweeps + 2,
             30, what="the retry's message and two sweeps")
    assert len(receiver.requests_to("/deleted")) == 1


def test_a_summary_deleted_while_in_progress_sends_no_callback(engine, client, account, receiver, start):
    locker = engine.connect()
    locker.begin()
    locker.execute(text("LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE"))  # hold the computation mid-way
    try:
        start()
        sid = create(client, account, receiver.script("/never"))
        wait_for(lambda: client.get(summaries_path(account.sid, sid), auth=(account.sid, account.auth_token))
                 .json["status"] == "in-progress", 30, what="the claim")
        assert client.delete(summaries_path(account.sid, sid), auth=(account.sid, account.auth_token)).status == 204
    finally:
        locker.rollback()
        locker.close()
    sentinel = create(client, account, receiver.script("/sentinel"))  # a later summary goes through
    settled(engine, sentinel, "delivered")
    assert receiver.requests_to("/never") == [] and delivery(engine, sid) is None


def test_redis_emptied_loses_no_pending_delivery(engine, client, account, receiver, redis_client, start):
    start(queues="summaries", beat=False)  # summaries complete; their callbacks wait in Redis
    sids = [create(client, account, receiver.script("/after-flush")) for _ in range(3)]
    wait_for(lambda: all(delivery(engine, s) for s in sids), 30, what="the deliveries to be written")
    wait_for(lambda: redis_client.llen("callbacks") == 3, 10, what="their messages to be queued")
    redis_client.flushall()
    start(queues="callbacks")
    for sid in sids:
        settled(engine, sid, "delivered")
    assert len(receiver.requests_to("/after-flush")) == 3


def test_a_failing_host_opens_its_circuit_and_later_deliveries_wait(engine, client, account, receiver, start):
    start(CALLBACK_CIRCUIT_THRESHOLD="2", CALLBACK_CIRCUIT_COOLDOWN_S="2", CALLBACK_MAX_ATTEMPTS="1")
    first = [create(client, account, receiver.script("/down", Reply(503))) for _ in range(2)]
    for sid in first:
        settled(engine, sid, "failed")
    receiver.script("/down", Reply(200))
    opened_at = len(receiver.requests_to("/down"))
    later = create(client, account, receiver.base_url + "/down")
    found = settled(engine, later, "delivered", 30)
    assert found["attempts"] == 1 and len(receiver.requests_to("/down")) == opened_at + 1
    assert receiver.requests_to("/down")[-1].at - receiver.requests_to("/down")[-2].at >= 1.5


def test_a_private_address_is_refused_unless_its_network_is_allowed(engine, client, account, receiver):
    """In-process, one attempt through the real guard and a real socket, with two settings."""
    from sqlalchemy.orm import Session

    from shared.callbacks import deliveries
    from shared.models import CallbackDelivery, FeedbackSummary
    from worker.callbacks import send

    sid = create(client, account, receiver.script("/private"))
    with Session(engine) as session:
        deliveries.add(session, session.get(FeedbackSummary, sid), 3)
        session.commit()
        pending = session.get(CallbackDelivery, sid)
        refused = send(pending, account.auth_token, Settings.from_env({}))
        assert refused.final and "127.0.0.1" in refused.error and refused.outcome.value == "failed"
        assert receiver.requests_to("/private") == []
        allowed = send(pending, account.auth_token, Settings.from_env({"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"}))
        assert allowed.status_code == 200 and len(receiver.requests_to("/private")) == 1


def test_operators_list_failed_deliveries_and_redeliver_the_same_event(engine, client, account, receiver, start):
    start()
    failing = [create(client, account, receiver.script("/hook", Reply(404))) for _ in range(2)]
    other = create(client, account, receiver.script("/other-host", Reply(404)).replace("127.0.0.1", "localhost"))
    for sid in [*failing, other]:
        settled(engine, sid, "failed")

    listed = summaries_cli("callbacks", "list", "--state", "failed", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {row["summary_sid"] for row in json.loads(listed.stdout)} == {*failing, other}
    table = summaries_cli("callbacks", "list").stdout
    assert all(sid in table for sid in failing) and "HTTP 404" in table

    dry = summaries_cli("callbacks", "redeliver", "--state", "failed", "--host", "127.0.0.1", "--dry-run")
    assert dry.returncode == 0 and "2 deliveries would be sent" in dry.stdout and other not in dry.stdout
    assert "FeedbackSummarySid=" in dry.stdout
    assert {delivery(engine, sid)["state"] for sid in failing} == {"failed"}  # nothing was sent

    receiver.script("/hook", Reply(200))
    sent = summaries_cli("callbacks", "redeliver", failing[0])
    assert sent.returncode == 0 and "1 deliveries sent again" in sent.stdout, sent.stderr
    found = settled(engine, failing[0], "delivered")
    assert (found["attempts"], found["redeliveries"]) == (2, 1)
    first, second = [r for r in receiver.requests_to("/hook") if r.form["FeedbackSummarySid"] == failing[0]]
    assert first.headers["I-Twilio-Idempotency-Token"] == second.headers["I-Twilio-Idempotency-Token"]
    assert first.form == second.form  # the same event, byte for byte
    assert delivery(engine, failing[1])["state"] == "failed"

    bulk = summaries_cli("callbacks", "redeliver", "--state", "failed", "--since", "2000-01-01", "--rate", "50")
    assert "2 deliveries sent again" in bulk.stdout
    settled(engine, failing[1], "delivered")


def test_redeliver_refuses_an_empty_or_mixed_selection(engine):
    assert summaries_cli("callbacks", "redeliver").returncode == 2
    mixed = summaries_cli("callbacks", "redeliver", "FS" + "0" * 32, "--state", "failed")
    assert mixed.returncode == 2 and "not both" in mixed.stderr
    unknown = summaries_cli("callbacks", "redeliver", "FS" + "0" * 32)
    assert unknown.returncode == 0 and "no finished delivery" in unknown.stdout


def test_a_retried_failure_that_completes_calls_back_completed(engine, client, account, receiver, monkeypatch):
    """A summary has one delivery row: when an operator's retry of its failure completes, the
    completed event replaces the failed one (it was left unsent behind it before), and an attempt of
    the failed event still in flight then records nothing on the new one."""
    from shared.operator.actions import retry
    from shared.callbacks import deliveries
    from shared.callbacks.state import DeliveryState
    from shared.platform.db import autocommit
    from worker import rollups
    from worker.callbacks import send
    from worker.summaries import compute_summary

    sid = create(client, account, receiver.script("/retried"))
    computed = rollups.compute
    monkeypatch.setattr(rollups, "compute", lambda *args, **kwargs: 1 / 0)
    compute_summary.apply(args=[sid])
    assert delivery(engine, sid)["params"]["Status"] == "failed"
    with autocommit() as connection:
        in_flight = deliveries.claim(connection, sid, 60)  # the failed event, being sent
    assert retry([sid], "operator:test")[sid].startswith("queued")
    monkeypatch.setattr(rollups, "compute", computed)
    compute_summary.apply(args=[sid])
    replaced = delivery(engine, sid)
    assert (replaced["params"]["Status"], replaced["params"]["CallCount"], replaced["state"]) == ("completed", "3",
                                                                                                  "pending")
    assert replaced["leased_until"] is None and replaced["idempotency_token"] != in_flight.idempotency_token
    with autocommit() as connection:
        late = deliveries.Attempt("delivered", 200, None, 5, "ok")
        assert not deliveries.settle(connection, in_flight, DeliveryState.DELIVERED, late, None, None).recorded
        claimed = deliveries.claim(connection, sid, 60)
        assert claimed.params["Status"] == "completed" and claimed.attempt_limit > claimed.attempts
        sent = send(claimed, account.auth_token, Settings.from_env({"CALLBACK_ALLOWED_NETWORKS": "127.0.0.0/8"}))
        assert sent.status_code == 200
        assert deliveries.settle(connection, claimed, DeliveryState.DELIVERED, late, None, None).recorded
    arrived = receiver.requests_to("/retried")[-1]
    assert arrived.form["Status"] == "completed" and delivery(engine, sid)["state"] == "delivered"
