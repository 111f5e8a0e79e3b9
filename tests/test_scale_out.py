"""Scale-out with real processes: two workers with distinct node names share a burst of 200
summaries; each summary is claimed and computed exactly once, and all complete."""

from __future__ import annotations

import collections
import datetime as dt
import re

import pytest
from sqlalchemy import text

from tests.processes import celery_worker, wait_for
from tests.support import make_account, make_calls, summaries_path

pytestmark = pytest.mark.slow
BURST = 200


def test_two_workers_share_a_burst_and_compute_each_summary_exactly_once(engine, client, redis_client, tmp_path):
    accounts = [make_account(engine) for _ in range(10)]
    for account in accounts:
        make_calls(engine, account, [dt.datetime(2024, 1, d, tzinfo=dt.timezone.utc) for d in range(1, 11)])
    workers = [celery_worker(tmp_path, name, queues="summaries", concurrency=2) for name in ("north", "south")]
    try:
        for worker in workers:
            wait_for(lambda: "ready." in worker.output(), 30, 0.2, f"{worker.name} to be ready")
        form = {"StartDate": "2024-01-01", "EndDate": "2024-01-31"}
        sids = []
        for i in range(BURST):
            account = accounts[i % len(accounts)]
            response = client.post(summaries_path(account.sid), form=form, auth=(account.sid, account.auth_token))
            sids.append(response.json["sid"])

        def rows():
            with engine.connect() as connection:
                return connection.execute(text("SELECT sid, status, attempts, claimed_by, call_count "
                                               "FROM feedback_summaries")).all()

        wait_for(lambda: [r.status for r in rows()] == ["completed"] * BURST, 120, 0.5, "all 200 to complete")
    finally:
        for worker in workers:
            worker.stop()
    final = rows()
    assert sorted(r.sid for r in final) == sorted(sids)
    assert {r.attempts for r in final} == {1}  # claimed once: a second claim would have counted
    assert {r.call_count for r in final} == {10}
    by_worker = collections.Counter(r.claimed_by.split("@")[0] for r in final)
    assert set(by_worker) == {"north", "south"}, by_worker
    # Each worker logs the messages it received: together, every summary's one message, once.
    received = [re.findall(r"Task summaries\.compute\[([0-9a-f-]+)\] received", worker.output()) for worker in workers]
    assert len(received[0]) + len(received[1]) == len(set(received[0]) | set(received[1])) == BURST
