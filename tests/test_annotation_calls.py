"""An annotation's call: a call not known yet is held as a feedback post's is (provisional, under the
credentials' account), confirmed by its status callback, moved with its annotation and feedback in
the parent-to-subaccount case only, dropped with them by a move `calls sync` makes elsewhere, and
gone with its call; `summaries calls show` says what the summaries count for a call, and why."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text

from cli.imports import load_calls
from shared.accounts.sids import CALL, new_sid
from shared.calls import provisional
from tests.support import make_account, make_calls
from tests.test_api_annotations import annotate, entry, fetched
from tests.test_live_traffic import T0, call_row, event, post_event, summary_of

UTC = dt.timezone.utc


def annotation_row(engine, sid: str) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM call_annotations WHERE call_sid = :s"), {"s": sid}).first()
    return row._asdict() if row else None


@pytest.fixture
def family(engine, redis_client):
    parent = make_account(engine)
    return {"parent": parent, "child": make_account(engine, parent), "sibling": make_account(engine, parent)}


def test_an_annotation_before_its_call_is_kept_and_the_status_callback_confirms_the_call(client, engine, family):
    account, sid = family["child"], new_sid(CALL)
    assert annotate(client, account, sid, {"CallScore": "2", "ConnectivityIssue": "dropped_call"}).status == 200
    assert (call_row(engine, sid)["provisional"], call_row(engine, sid)["account_sid"]) == (True, account.sid)
    for form in (event(account, sid, "initiated", T0, 0),
                 event(account, sid, "completed", T0 + dt.timedelta(seconds=70), 3, CallDuration="50")):
        assert post_event(client, form, account.auth_token).status == 204
    assert (call_row(engine, sid)["provisional"], call_row(engine, sid)["start_time"]) == (False, T0)
    assert fetched(client, account, sid).json["call_score"] == 2
    today = dt.datetime.now(UTC).date()
    summary = summary_of(engine, account, T0.date(), today)
    assert (summary["call_count"], summary["call_feedback_count"]) == (1, 1)
    assert [issue["description"] for issue in summary["issues"]] == ["dropped-call"]


def test_the_parents_annotation_moves_with_its_call_to_the_subaccount(client, engine, family):
    """The parent-path case: the parent's credentials annotate a call not known yet (held under the
    parent), which Twilio's status callback then names as its subaccount's."""
    parent, child, sid = family["parent"], family["child"], new_sid(CALL)
    assert annotate(client, parent, sid, {"CallScore": "4", "Comment": "from the parent"}).status == 200
    assert post_event(client, event(child, sid, "initiated", T0, 0), child.auth_token).status == 204
    assert (call_row(engine, sid)["account_sid"], call_row(engine, sid)["provisional"]) == (child.sid, False)
    assert annotation_row(engine, sid)["account_sid"] == child.sid and entry(engine, sid)["account_sid"] == child.sid
    for caller in (child, parent):  # the parent reaches it still, as its subaccount's
        body = fetched(client, child, sid, as_=caller).json
        assert (body["account_sid"], body["call_score"], body["comment"]) == (child.sid, 4, "from the parent")
    today = dt.datetime.now(UTC).date()
    moved = summary_of(engine, child, T0.date(), today)
    assert (moved["call_count"], moved["call_feedback_count"]) == (1, 1)
    assert summary_of(engine, parent, T0.date(), today)["call_count"] == 0


@pytest.mark.parametrize("annotator, sender", [("child", "sibling"), ("child", "parent")])
def test_no_other_status_callback_takes_an_annotated_call(client, engine, family, annotator, sender):
    sid = new_sid(CALL)
    assert annotate(client, family[annotator], sid, {"CallScore": "3"}).status == 200
    assert post_event(client, event(family[sender], sid, "initiated", T0, 0), family[sender].auth_token).status == 204
    assert (call_row(engine, sid)["account_sid"], call_row(engine, sid)["provisional"]) == (family[annotator].sid, True)
    assert annotation_row(engine, sid)["account_sid"] == family[annotator].sid
    assert fetched(client, family[annotator], sid).json["call_score"] == 3


def test_a_sync_that_moves_the_call_elsewhere_drops_its_annotation_and_feedback(client, engine, family):
    """Twilio's record (`calls sync`) moves a call wherever Twilio says; what was written under the old
    account goes, as a Feedback post's entry does."""
    stranger, sid = make_account(engine), new_sid(CALL)
    assert annotate(client, family["child"], sid, {"CallScore": "1", "Comment": "private note"}).status == 200
    with engine.begin() as connection:
        load_calls(connection, [(1, sid, stranger.sid, T0)], "twilio")
    assert call_row(engine, sid)["account_sid"] == stranger.sid
    assert annotation_row(engine, sid) is None and entry(engine, sid) is None
    assert fetched(client, stranger, sid).json["comment"] is None  # nothing of the old account's shows


def test_the_annotation_goes_with_its_call(client, engine, family):
    account = family["child"]
    make_calls(engine, account, [T0])  # a call source: the account's provisional calls expire
    typo, removed, deleted = new_sid(CALL), new_sid(CALL), make_calls(engine, account, [T0])[0]
    for sid in (typo, removed, deleted):
        assert annotate(client, account, sid, {"CallScore": "5", "Spam": "true"}).status == 200
    with engine.begin() as connection:
        connection.execute(text("UPDATE calls SET start_time = now() - interval '2 hours' WHERE sid = :s"),
                           {"s": typo})
        assert provisional.expire(connection, 3600) == [(typo, account.sid)]
        assert provisional.remove(connection, [removed]) == [removed]
        connection.execute(text("DELETE FROM calls WHERE sid = :s"), {"s": deleted})
    for sid in (typo, removed, deleted):
        assert annotation_row(engine, sid) is None and entry(engine, sid) is None


def test_calls_show_says_why_a_call_counts_as_a_2(client, engine, family, capsys):
    from cli.main import main

    account, parent = family["child"], family["parent"]
    sid = make_calls(engine, account, [T0])[0]
    client.post(f"/2010-04-01/Accounts/{account.sid}/Calls/{sid}/Feedback.json", form={"QualityScore": "5"},
                auth=(account.sid, account.auth_token))
    annotate(client, account, sid, {"CallScore": "2", "QualityIssues": "latency,echo", "Comment": "user: \x1b[2J"},
             as_=parent)
    unknown = new_sid(CALL)
    assert main(["calls", "show", sid, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)[sid]
    assert (shown["account_sid"], shown["counted_as_call_on"]) == (account.sid, T0.date().isoformat())
    assert shown["feedback"]["quality_score"] == 2 and shown["feedback"]["last_written_by"] == "annotation"
    assert shown["feedback"]["issues"] == ["audio-latency", "imperfect-audio"]
    assert shown["annotation"]["reports"] == ["QualityIssues latency -> audio-latency",
                                              "QualityIssues echo -> imperfect-audio"]
    assert main(["calls", "show", sid]) == 0
    printed = capsys.readouterr().out
    assert "score 2" in printed and "by the annotation below" in printed and "latency -> audio-latency" in printed
    assert "\x1b" not in printed and "\\u001b" in printed  # outside text is shown, quoted and escaped, never obeyed
    # A post after the annotation: the entry is the post's, and the command says so.
    client.post(f"/2010-04-01/Accounts/{account.sid}/Calls/{sid}/Feedback.json", form={"QualityScore": "3"},
                auth=(account.sid, account.auth_token))
    assert main(["calls", "show", sid, unknown]) == 1
    printed = capsys.readouterr().out
    assert "score 3" in printed and "by a Feedback post or an import" in printed
    assert f"{unknown}: no such call" in printed


def test_a_clear_waits_for_a_post_in_flight_and_removes_the_entry_it_wrote(client, engine, family):
    """The post has written a first entry for the call and not committed yet when an update clears the
    score. The update is the later write, so the entry must go: it waits for the post (which holds the
    call's row) and removes the entry in a statement that starts after the post committed. A delete in
    the statement that waited would not see the post's row, and the entry would stay."""
    import threading

    from api.feedback import UPSERT_OWN_CALL_FEEDBACK
    from tests.processes import wait_for

    account = family["child"]
    sid = make_calls(engine, account, [T0])[0]
    assert annotate(client, account, sid, {"Comment": "no score yet"}).status == 200
    written, commit = threading.Event(), threading.Event()

    def post():
        with engine.begin() as connection:
            assert connection.execute(UPSERT_OWN_CALL_FEEDBACK, {"call_sid": sid, "account_sid": account.sid,
                                                                 "quality_score": 5, "issues": []}).first()
            written.set()
            commit.wait(10)

    poster = threading.Thread(target=post)
    poster.start()
    assert written.wait(10)
    answers = []
    clear = threading.Thread(target=lambda: answers.append(annotate(client, account, sid, {"CallScore": ""}).status))
    clear.start()

    def waiting() -> bool:
        with engine.connect() as connection:
            return bool(connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                                "AND query LIKE '%call_annotations%'")).scalar())

    wait_for(lambda: waiting() or not clear.is_alive(), 10, 0.02, "the clear to wait for the post")
    assert clear.is_alive(), "the clear did not wait for the post in flight"
    commit.set()
    poster.join(10)
    clear.join(10)
    assert answers == [200] and entry(engine, sid) is None
    assert fetched(client, account, sid).json["comment"] == "no score yet"
