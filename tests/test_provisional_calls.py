"""Provisional calls (known from a feedback post, not yet from Twilio): for an account whose calls
come from a call source, one nothing confirmed within PROVISIONAL_CALL_GRACE_S stops counting
(removed with its feedback); operators list and remove them; feedback posts are rate-limited like
creates (issue 21: 20 typo'd SIDs counted as calls and feedback for good, 400 posts at 268/s)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text

from api.factory import create_app
from shared.accounts.sids import CALL, new_sid
from shared.calls import provisional
from shared.platform.config import Settings
from tests.processes import summaries_cli
from tests.support import WsgiClient, feedback_path, make_account, make_calls
from tests.test_live_traffic import call_row, event, post_event, post_feedback, summary_of

UTC = dt.timezone.utc
GRACE_S = 3600


def age(engine, sid: str, seconds: float) -> None:
    """As if the post that recorded it came `seconds` ago."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE calls SET start_time = now() - make_interval(secs => :s) WHERE sid = :sid"),
                           {"s": seconds, "sid": sid})


def expire(engine) -> list[tuple[str, str]]:
    with engine.begin() as connection:
        return provisional.expire(connection, GRACE_S)


def test_a_typod_sid_stops_counting_after_the_grace_where_calls_come_from_twilio(client, engine):
    account = make_account(engine)
    real = new_sid(CALL)
    assert post_event(client, event(account, real, "completed", dt.datetime.now(UTC), 1, CallDuration="30"),
                      account.auth_token).status == 204  # a call source: Twilio's status callbacks
    typos = [new_sid(CALL) for _ in range(3)]
    for sid in typos:
        assert post_feedback(client, account, sid).status == 200
    today = dt.datetime.now(UTC).date()
    before = summary_of(engine, account, today - dt.timedelta(days=1), today)
    assert (before["call_count"], before["call_feedback_count"]) == (4, 3)
    age(engine, typos[0], GRACE_S + 60)
    age(engine, typos[1], GRACE_S + 30)
    assert sorted(expire(engine)) == sorted([(typos[0], account.sid), (typos[1], account.sid)])
    assert expire(engine) == []  # nothing more past its grace
    after = summary_of(engine, account, today - dt.timedelta(days=2), today)
    assert (after["call_count"], after["call_feedback_count"]) == (2, 1)
    assert call_row(engine, typos[0]) is None and call_row(engine, typos[2])["provisional"] is True
    assert client.get(feedback_path(account.sid, typos[0]), auth=(account.sid, account.auth_token)).status == 404
    assert call_row(engine, real)["provisional"] is False  # a confirmed call is never touched


def test_an_account_with_no_call_source_keeps_its_provisional_calls(client, engine):
    account = make_account(engine)  # feedback only: its provisional calls are all the calls it has
    sid = new_sid(CALL)
    assert post_feedback(client, account, sid).status == 200
    age(engine, sid, 10 * GRACE_S)
    assert expire(engine) == []
    with engine.connect() as connection:
        (held,) = provisional.listed(connection, GRACE_S, account.sid)
    assert (held.sid, held.quality_score, held.expires_at) == (sid, 2, None)


def test_the_worker_task_removes_them_in_batches(client, engine, monkeypatch, settings_env):
    from worker import sweeper

    monkeypatch.setattr(provisional, "EXPIRY_BATCH", 2)
    settings_env(PROVISIONAL_CALL_GRACE_S=str(GRACE_S))
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=UTC)])  # a call source (an import, say)
    sids = [new_sid(CALL) for _ in range(5)]
    for sid in sids:
        assert post_feedback(client, account, sid).status == 200
        age(engine, sid, GRACE_S + 1)
    assert sweeper.expire_provisional_calls() == 5
    assert all(call_row(engine, sid) is None for sid in sids)


@pytest.mark.slow
def test_operators_list_and_remove_them_from_the_command_line(client, engine):
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=UTC)])
    held, confirmed = new_sid(CALL), new_sid(CALL)
    assert post_feedback(client, account, held).status == 200
    assert post_event(client, event(account, confirmed, "initiated", dt.datetime.now(UTC), 0),
                      account.auth_token).status == 204
    listing = summaries_cli("calls", "provisional", "--account", account.sid, "--json")
    assert listing.returncode == 0, listing.stderr
    (row,) = json.loads(listing.stdout)
    assert (row["sid"], row["quality_score"]) == (held, 2) and row["expires_at"] is not None
    table = summaries_cli("calls", "provisional")
    assert held in table.stdout and "EXPIRES" in table.stdout
    removed = summaries_cli("calls", "provisional", "--remove", held, confirmed)
    assert removed.returncode == 0, removed.stderr
    assert "removed 1 provisional call(s)" in removed.stdout and confirmed in removed.stdout
    assert call_row(engine, held) is None and call_row(engine, confirmed) is not None
    assert summaries_cli("calls", "provisional").stdout.strip() == "no provisional calls"


def test_feedback_posts_are_rate_limited_per_account_like_creates(engine, redis_client, monkeypatch):
    monkeypatch.setenv("FEEDBACK_RATE_LIMIT", "3/minute")
    client = WsgiClient(create_app(Settings.from_env()))
    account, other = make_account(engine), make_account(engine)
    statuses = [post_feedback(client, account, new_sid(CALL)).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = post_feedback(client, account, new_sid(CALL))
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.json["code"] == 20429
    assert post_feedback(client, other, new_sid(CALL)).status == 200  # each account its own windows
    # A bad post is a 400, and spends nothing.
    bad = client.post(feedback_path(other.sid, new_sid(CALL)), form={"QualityScore": "9"},
                      auth=(other.sid, other.auth_token))
    assert bad.status == 400
    with engine.connect() as connection:
        provisional_calls = connection.execute(text("SELECT count(*) FROM calls WHERE provisional")).scalar()
    assert provisional_calls == 4  # the refused ones recorded nothing


def test_a_call_held_by_the_wrong_account_goes_to_the_one_whose_status_callback_claimed_it(client, engine):
    """A posts feedback on B's call first (the wrong credentials, or a stranger who learnt the SID):
    B's signed events took nothing, and when the grace ended the call was deleted, lost to B (found
    by review). Now B's event is kept as a claim, and the call goes to B then; A's feedback goes."""
    holder, owner = make_account(engine), make_account(engine)
    make_calls(engine, holder, [dt.datetime(2024, 1, 2, tzinfo=UTC)])  # a call source: its calls expire
    sid, started = new_sid(CALL), dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    assert post_feedback(client, holder, sid).status == 200
    for status, sequence in (("initiated", 0), ("completed", 1)):
        assert post_event(client, event(owner, sid, status, started, sequence, CallDuration="0"),
                          owner.auth_token).status == 204
    row = call_row(engine, sid)
    assert (row["account_sid"], row["provisional"], row["claimed_by"]) == (holder.sid, True, owner.sid)
    with engine.connect() as connection:
        (held,) = provisional.listed(connection, GRACE_S, holder.sid)
    assert held.claimed_by == owner.sid and held.expires_at is not None
    age(engine, sid, GRACE_S + 1)
    with engine.begin() as connection:
        assert provisional.hand_over(connection, GRACE_S) == [(sid, owner.sid)]
    assert expire(engine) == []  # handed over, not deleted
    row = call_row(engine, sid)
    assert (row["account_sid"], row["provisional"], row["claimed_by"], row["start_time"]) == \
        (owner.sid, False, None, started)
    assert client.get(feedback_path(holder.sid, sid), auth=(holder.sid, holder.auth_token)).status == 404
    today = dt.datetime.now(UTC).date()
    assert summary_of(engine, owner, today - dt.timedelta(days=1), today)["call_count"] == 1
