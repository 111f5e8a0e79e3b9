"""The state machine and the compute task, run in-process on real PostgreSQL and Redis: every
allowed and forbidden transition, a duplicate message, a delete at each stage, a transient and a
permanent error, and what the sweeper considers lost."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.platform import queue
from shared.errors import IllegalTransition
from shared.summaries import lifecycle
from shared.summaries.lifecycle import claim
from shared.summaries.status import OPERATOR_TRANSITIONS, TRANSITIONS, SummaryStatus
from tests.support import backdate, make_calls, summary_in
from worker import rollups

ALLOWED = {(SummaryStatus.QUEUED, SummaryStatus.IN_PROGRESS), (SummaryStatus.IN_PROGRESS, SummaryStatus.COMPLETED),
           (SummaryStatus.IN_PROGRESS, SummaryStatus.FAILED)}



@pytest.fixture
def compute_summary(service_urls):
    # Imported once the test services are in the environment: the Celery app reads them at import.
    from worker.summaries import compute_summary

    return compute_summary


def insert_summary(engine, account, status: SummaryStatus = SummaryStatus.QUEUED) -> str:
    return summary_in(engine, account, status.value)


def row(engine, sid: str) -> dict | None:
    with engine.connect() as connection:
        found = connection.execute(text("SELECT * FROM feedback_summaries WHERE sid = :sid"), {"sid": sid}).first()
    return found._asdict() if found else None


def test_the_transition_table_is_exactly_the_spec():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == ALLOWED


def test_the_workers_statements_are_held_to_the_table():
    from shared.summaries.lifecycle import _status_move

    for expected, target in itertools.product(SummaryStatus, SummaryStatus):
        if (expected, target) in ALLOWED:
            assert f"status = '{expected.value}'" in str(_status_move(expected, target))
        else:
            with pytest.raises(IllegalTransition):
                _status_move(expected, target)


RESULT = {"call_count": 0, "call_feedback_count": 0, "quality_score_average": None, "quality_score_median": None,
          "quality_score_standard_deviation": None, "issues": []}
# Every move the owner makes, by the status it moves to (the claim by another worker than summary_in's).
MOVES = {SummaryStatus.IN_PROGRESS: lambda db, sid: lifecycle.claim(db, sid, "another-worker", 60),
         SummaryStatus.COMPLETED: lambda db, sid: lifecycle.complete(db, sid, "test-worker", RESULT),
         SummaryStatus.FAILED: lambda db, sid: lifecycle.fail(db, sid, "test-worker", "x")}


@pytest.mark.parametrize("current, target", list(itertools.product(SummaryStatus, MOVES)))
def test_every_move_happens_only_where_the_table_allows_it(engine, account, current, target):
    sid = insert_summary(engine, account, current)
    before = row(engine, sid)
    with engine.begin() as connection:
        moved = MOVES[target](connection, sid)
    assert (moved is not None) == ((current, target) in ALLOWED)
    if moved is None:
        assert row(engine, sid) == before  # nothing changed, not even date_updated
    else:
        assert row(engine, sid)["status"] == target.value


@pytest.mark.parametrize("current", list(SummaryStatus))
def test_only_a_failed_summary_is_put_back_in_the_queue_by_an_operator(engine, account, current):
    assert OPERATOR_TRANSITIONS == {SummaryStatus.FAILED: frozenset({SummaryStatus.QUEUED})}
    sid = insert_summary(engine, account, current)
    with engine.begin() as connection:
        moved = lifecycle.retry_failed(connection, sid, "operator:test")
    assert (moved is not None) == (current is SummaryStatus.FAILED)
    assert row(engine, sid)["status"] == ("queued" if current is SummaryStatus.FAILED else current.value)


def test_the_database_refuses_an_unknown_status(engine, account):
    sid = insert_summary(engine, account)
    with pytest.raises(Exception, match="known_status"), engine.begin() as connection:
        connection.execute(text("UPDATE feedback_summaries SET status = 'paused' WHERE sid = :sid"), {"sid": sid})


def test_a_claim_is_held_by_a_live_lease_and_taken_over_after_it_expires(engine, account):
    sid = insert_summary(engine, account)
    with Session(engine) as session:
        assert claim(session, sid, "a", 60).claimed_by == "a"
        assert claim(session, sid, "b", 60) is None  # a's lease is live
        # A retry of a's own message resumes (here with a lease that has already run out).
        assert claim(session, sid, "a", -1).attempts == 2
        taken = claim(session, sid, "b", 60)
        assert (taken.claimed_by, taken.status, taken.attempts) == ("b", "in-progress", 3)
        session.commit()


def test_a_retry_of_the_same_message_on_another_worker_resumes_the_claim(engine, account):
    """The owner is `host/task id`: the message's retry, delivered to another node, keeps its task id
    and takes its own claim back at once (before, it waited out the lease its first run had taken);
    another message's task does not."""
    sid = insert_summary(engine, account)
    with engine.begin() as connection:
        assert claim(connection, sid, "node-a/task-1", 300).claimed_by == "node-a/task-1"
        assert claim(connection, sid, "node-b/task-2", 300) is None  # another message: the lease holds
        resumed = claim(connection, sid, "node-b/task-1", 300)
        assert (resumed.claimed_by, resumed.attempts) == ("node-b/task-1", 2)
        assert claim(connection, sid, "node-c/", 300) is None  # no task id: never anyone's retry


def test_compute_completes_with_the_results_and_a_duplicate_message_does_nothing(engine, account, compute_summary):
    make_calls(engine, account, [dt.datetime(2024, 1, 5, tzinfo=dt.timezone.utc)] * 3)
    sid = insert_summary(engine, account)
    compute_summary.apply(args=[sid])
    done = row(engine, sid)
    assert (done["status"], done["call_count"], done["attempts"], done["lease_expires_at"]) == ("completed", 3, 1, None)
    compute_summary.apply(args=[sid])  # the same message delivered again
    assert row(engine, sid) == done


def test_compute_clears_the_in_flight_marker_when_it_claims(engine, account, redis_client, compute_summary):
    sid = insert_summary(engine, account)
    redis_client.set(queue.IN_FLIGHT_KEY.format(sid=sid), 1)
    compute_summary.apply(args=[sid])
    assert not redis_client.exists(queue.IN_FLIGHT_KEY.format(sid=sid))


def test_a_summary_deleted_before_its_message_runs_is_not_recreated(engine, account, compute_summary):
    sid = insert_summary(engine, account)
    with engine.begin() as connection:
        assert lifecycle.delete(connection, sid, account.sid)
    compute_summary.apply(args=[sid])
    assert row(engine, sid) is None


def test_a_summary_deleted_while_it_is_computed_is_not_recreated(engine, account, monkeypatch, compute_summary):
    sid = insert_summary(engine, account)
    real_compute = rollups.compute

    def compute_then_delete(*args, **kwargs):
        result = real_compute(*args, **kwargs)
        with engine.begin() as connection:  # the API's DELETE, from another connection, mid-job
            assert lifecycle.delete(connection, sid, account.sid)
        return result

    monkeypatch.setattr(rollups, "compute", compute_then_delete)
    compute_summary.apply(args=[sid])
    assert row(engine, sid) is None


def computed_with_an_error(engine, account, monkeypatch, compute_summary, message: str) -> dict:
    """The summary's row after a computation that raised ValueError(message)."""
    sid = insert_summary(engine, account)

    def broken(*args, **kwargs):
        raise ValueError(message)

    monkeypatch.setattr(rollups, "compute", broken)
    compute_summary.apply(args=[sid])
    return row(engine, sid)


def test_a_permanent_error_fails_the_summary_and_keeps_the_reason(engine, account, monkeypatch, compute_summary):
    failed = computed_with_an_error(engine, account, monkeypatch, compute_summary,
                                    "division by zero in a place nobody expected")
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "ValueError: division by zero in a place nobody expected"
    assert failed["lease_expires_at"] is None


def test_a_failure_whose_reason_postgresql_cannot_hold_still_fails_the_summary(engine, account, monkeypatch,
                                                                               compute_summary):
    failed = computed_with_an_error(engine, account, monkeypatch, compute_summary,
                                    "bad byte \x00 and an escape \x1b]52;c;x\x07")
    assert failed["status"] == "failed"
    assert failed["failure_reason"] == "ValueError: bad byte \\x00 and an escape \\x1b]52;c;x\\x07"


def test_a_transient_database_error_is_retried_and_then_completes(engine, account, monkeypatch, compute_summary):
    sid = insert_summary(engine, account)
    real_compute, calls = rollups.compute, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(rollups, "compute", flaky)
    compute_summary.apply(args=[sid])  # eager: the retry runs at once, as the same task id
    done = row(engine, sid)
    assert (done["status"], done["attempts"], len(calls)) == ("completed", 2, 2)


def test_the_sweeper_finds_queued_without_a_message_and_expired_leases_only(engine, account, redis_client):
    lost_queued = insert_summary(engine, account)
    sent_queued = insert_summary(engine, account)
    expired = insert_summary(engine, account, SummaryStatus.IN_PROGRESS)
    leased = insert_summary(engine, account, SummaryStatus.IN_PROGRESS)  # for 300 s
    finished = [insert_summary(engine, account, status) for status in (SummaryStatus.COMPLETED, SummaryStatus.FAILED)]
    backdate(engine, "feedback_summaries", [lost_queued, sent_queued, *finished], 60 / 86400)
    backdate(engine, "feedback_summaries", [expired], 1 / 86400, column="lease_expires_at")
    fresh_queued = insert_summary(engine, account)  # its marker may not be written yet
    redis_client.set(queue.IN_FLIGHT_KEY.format(sid=sent_queued), 1)
    from worker.sweeper import lost_summaries

    found = lost_summaries()
    assert sorted(found) == sorted([lost_queued, expired])
    # Not lost: a create whose marker may not be written yet, a live lease, a message in flight.
    assert not {fresh_queued, leased, sent_queued} & set(found)
