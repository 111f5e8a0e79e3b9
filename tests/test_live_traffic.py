"""Live traffic from Twilio: voice status callbacks record each call once (signed by the account's
real token, checked over the URL Twilio requested), feedback that races its call is kept, and an
account keeps the SID and token it has at Twilio. Signatures are made by the official library's
RequestValidator, not by our code."""

from __future__ import annotations

import datetime as dt
import json
from email.utils import format_datetime

import pytest
from sqlalchemy import text
from twilio.request_validator import RequestValidator

from shared.accounts.sids import CALL, new_sid
from tests.processes import summaries_cli, wait_for
from tests.reference import AGGREGATE_FIELDS, expected_for
from tests.support import WsgiClient, feedback_path, make_account, snapshot
from worker import rollups

UTC = dt.timezone.utc
HOST = "hooks.example.com"
URL = f"http://{HOST}/twilio/voice/status"
T0 = dt.datetime(2024, 3, 1, 23, 59, 30, tzinfo=UTC)  # ringing just before midnight: the day matters


def event(account, call_sid: str, status: str, at: dt.datetime, sequence: int, **extra) -> dict:
    """The form Twilio posts for a call status callback (a realistic subset of its parameters)."""
    form = {"AccountSid": account.sid, "CallSid": call_sid, "CallStatus": status, "Timestamp": format_datetime(at),
            "SequenceNumber": str(sequence), "ApiVersion": "2010-04-01", "Direction": "outbound-api",
            "From": "+15005550006", "To": "+15005550001", "CallbackSource": "call-progress-events"}
    form.update(extra)
    return form


def post_event(client, form: dict, token: str | None, url: str = URL, host: str = HOST, signature: str | None = None):
    signature = signature if signature is not None else RequestValidator(token).compute_signature(url, form)
    return client.post("/twilio/voice/status", form=form, headers={"Host": host, "X-Twilio-Signature": signature})


def call_row(engine, sid: str) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM calls WHERE sid = :s"), {"s": sid}).first()
    return row._asdict() if row else None


def summary_of(engine, account, day_from: dt.date, day_to: dt.date) -> dict:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        ours = rollups.compute(session, account.sid, False, day_from, day_to).columns()
    expected = expected_for(engine, account.sid, False, day_from, day_to)
    assert {name: ours[name] for name in AGGREGATE_FIELDS} == expected  # the rollups stay exact
    return ours



def test_each_call_is_recorded_once_from_its_first_event_whatever_follows(client, engine, account):
    sid = new_sid(CALL)
    token = account.auth_token
    for form in (event(account, sid, "initiated", T0, 0),
                 event(account, sid, "initiated", T0, 0),  # Twilio's retry of the same event
                 event(account, sid, "ringing", T0 + dt.timedelta(seconds=5), 1),
                 event(account, sid, "answered", T0 + dt.timedelta(seconds=20), 2),
                 event(account, sid, "completed", T0 + dt.timedelta(seconds=80), 3, CallDuration="60")):
        response = post_event(client, form, token)
        assert response.status == 204, response.body
    row = call_row(engine, sid)
    assert (row["account_sid"], row["start_time"], row["provisional"]) == (account.sid, T0, False)
    assert summary_of(engine, account, T0.date(), T0.date())["call_count"] == 1


def test_a_completed_event_alone_starts_the_call_its_duration_earlier_and_an_earlier_event_corrects_it(
        client, engine, account):
    sid = new_sid(CALL)
    ended = T0 + dt.timedelta(seconds=100)  # 2 March, 00:01:10
    assert post_event(client, event(account, sid, "completed", ended, 3, CallDuration="45"), account.auth_token).status == 204
    assert call_row(engine, sid)["start_time"] == ended - dt.timedelta(seconds=45)  # 00:00:25, 2 March
    day1, day2 = T0.date(), T0.date() + dt.timedelta(days=1)
    assert (summary_of(engine, account, day1, day1)["call_count"], summary_of(engine, account, day2, day2)["call_count"]) == (0, 1)
    # The `initiated` event arrives late (out of order): the call started on 1 March after all.
    assert post_event(client, event(account, sid, "initiated", T0, 0), account.auth_token).status == 204
    assert call_row(engine, sid)["start_time"] == T0
    assert (summary_of(engine, account, day1, day1)["call_count"], summary_of(engine, account, day2, day2)["call_count"]) == (1, 0)


@pytest.mark.parametrize("forgery", ["wrong signature", "no signature", "another account's token", "unknown account",
                                     "other url", "odd bytes in the signature", "tampered body"])
def test_a_forged_unsigned_or_unknown_account_request_is_403_and_stores_nothing(client, engine, redis_client, account,
                                                                                forgery):
    other = make_account(engine)
    form = event(account, new_sid(CALL), "initiated", T0, 0)
    token, kwargs = account.auth_token, {}
    if forgery == "wrong signature":
        kwargs["signature"] = RequestValidator(token).compute_signature(URL, {**form, "CallStatus": "ringing"})
    elif forgery == "no signature":
        kwargs["signature"] = ""
    elif forgery == "another account's token":
        token = other.auth_token
    elif forgery == "unknown account":
        form["AccountSid"] = "AC" + "0" * 32
    elif forgery == "other url":
        kwargs["url"] = "http://evil.example.com/twilio/voice/status"
    elif forgery == "odd bytes in the signature":
        kwargs["signature"] = "\xff\xfe caf\xe9 ñ"
    before = snapshot(engine, redis_client)
    if forgery == "tampered body":
        signature = RequestValidator(token).compute_signature(URL, form)
        form["CallSid"] = new_sid(CALL)
        kwargs["signature"] = signature
    response = post_event(client, form, token, **kwargs)
    assert (response.status, response.json["code"], response.json["status"]) == (403, 20403, 403)
    assert snapshot(engine, redis_client) == before


def test_the_signature_is_checked_over_the_public_url_behind_a_proxy_and_with_either_port_spelling(
        engine, redis_client, account, monkeypatch):
    from api.factory import create_app
    from shared.platform.config import Settings

    form = event(account, new_sid(CALL), "initiated", T0, 0)
    public = "https://summaries.example.com/twilio/voice/status"
    signed_public = RequestValidator(account.auth_token).compute_signature(public, form)
    direct = WsgiClient(create_app(Settings.from_env()))
    assert post_event(direct, form, None, host="10.0.0.5:8080", signature=signed_public).status == 403
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://summaries.example.com/")
    proxied = WsgiClient(create_app(Settings.from_env()))
    assert post_event(proxied, form, None, host="10.0.0.5:8080", signature=signed_public).status == 204
    # Twilio may sign https://host:443/... or http://host:80/...; both spellings name the same URL.
    with_port = RequestValidator(account.auth_token).compute_signature(f"http://{HOST}:80/twilio/voice/status", form)
    assert post_event(direct, form, None, signature=with_port).status == 204
    assert call_row(engine, form["CallSid"]) is not None


def test_the_secondary_token_signs_too_during_a_rotation(client, engine, account):
    from sqlalchemy.orm import Session

    from cli import accounts

    with Session(engine) as session:
        secondary = accounts.rotate_token(session, account.sid)
        session.commit()
    form = event(account, new_sid(CALL), "initiated", T0, 0)
    assert post_event(client, form, secondary).status == 204


def test_a_token_stops_signing_at_once_though_the_process_knows_it_from_earlier_events(client, engine, account):
    """The API keeps an account's tokens from one status callback to the next (api/voice_status.py);
    once the account no longer has a token, an event it signs is refused at once and records nothing."""
    from sqlalchemy.orm import Session

    from cli import accounts

    old = account.auth_token
    assert post_event(client, event(account, new_sid(CALL), "initiated", T0, 0), old).status == 204
    with Session(engine) as session:
        new = accounts.rotate_token(session, account.sid)
        session.commit()
    assert post_event(client, event(account, new_sid(CALL), "initiated", T0, 0), new).status == 204
    assert post_event(client, event(account, new_sid(CALL), "initiated", T0, 0), old).status == 204
    with Session(engine) as session:
        accounts.promote_token(session, account.sid)
        session.commit()
    form = event(account, new_sid(CALL), "initiated", T0, 0)
    assert post_event(client, form, old).status == 403
    assert call_row(engine, form["CallSid"]) is None
    assert post_event(client, form, new).status == 204
    assert call_row(engine, form["CallSid"])["account_sid"] == account.sid


def test_a_signed_event_twilio_cannot_fix_is_answered_2xx_and_stores_nothing(client, engine, redis_client, account):
    before = snapshot(engine, redis_client)
    form = event(account, "CAnotasid", "initiated", T0, 0)
    assert post_event(client, form, account.auth_token).status == 204
    assert snapshot(engine, redis_client) == before
    # An unreadable Timestamp is not Twilio's to fix either: the call is recorded as of now.
    sid = new_sid(CALL)
    assert post_event(client, {**event(account, sid, "initiated", T0, 0), "Timestamp": "soon"},
                      account.auth_token).status == 204
    assert abs(call_row(engine, sid)["start_time"] - dt.datetime.now(UTC)) < dt.timedelta(minutes=5)


def test_an_unreadable_call_duration_is_ignored(client, engine, account):
    sid = new_sid(CALL)
    form = event(account, sid, "completed", T0, 3, CallDuration="\u00b2")  # a digit to str.isdigit, not to int()
    assert post_event(client, form, account.auth_token).status == 204
    assert call_row(engine, sid)["start_time"] == T0


@pytest.mark.parametrize("extra", [
    {"Timestamp": "Mon, 23 Nov 99999999999999999999 10:00:00 +0000"},
    {"Timestamp": "Mon, 23 Nov 2026 99999999999999999999:00:00 +0000"},
    {"Timestamp": "Fri, 31 Dec 9999 23:30:00 -0100"},  # year 10000 in UTC: PostgreSQL cannot hold it
])
def test_a_signed_event_with_an_unreadable_or_impossible_time_is_recorded_as_of_now(client, engine, account, extra):
    sid = new_sid(CALL)
    assert post_event(client, {**event(account, sid, "completed", T0, 3), **extra}, account.auth_token).status == 204
    assert abs(call_row(engine, sid)["start_time"] - dt.datetime.now(UTC)) < dt.timedelta(minutes=5)
    # and the call stays usable: feedback for it is stored
    assert post_feedback(client, account, sid).status == 200


# --- feedback that races its call ------------------------------------------------------------------

def post_feedback(client, account, call_sid: str, score: int = 2, issues=("dropped-call",)):
    return client.post(feedback_path(account.sid, call_sid), form={"QualityScore": str(score), "Issue": list(issues)},
                       auth=(account.sid, account.auth_token))


def test_feedback_before_its_call_is_kept_and_the_status_callback_completes_the_call(client, engine, account):
    sid = new_sid(CALL)
    posted = post_feedback(client, account, sid)
    assert posted.status == 200, posted.body
    provisional = call_row(engine, sid)
    assert provisional["provisional"] and provisional["account_sid"] == account.sid
    assert client.get(feedback_path(account.sid, sid), auth=(account.sid, account.auth_token)).json["quality_score"] == 2
    # Then Twilio's callbacks for the call: the call is confirmed with its real start, counted once.
    for form in (event(account, sid, "initiated", T0, 0),
                 event(account, sid, "completed", T0 + dt.timedelta(seconds=70), 3, CallDuration="50")):
        assert post_event(client, form, account.auth_token).status == 204
    row = call_row(engine, sid)
    assert (row["provisional"], row["start_time"]) == (False, T0)
    given = dt.datetime.now(UTC).date()
    summary = summary_of(engine, account, min(T0.date(), given), given)
    assert (summary["call_count"], summary["call_feedback_count"]) == (1, 1)
    assert summary["issues"][0]["description"] == "dropped-call" and summary["issues"][0]["count"] == 1


def test_the_status_callback_first_then_feedback_is_the_ordinary_case(client, engine, account):
    sid = new_sid(CALL)
    assert post_event(client, event(account, sid, "initiated", T0, 0), account.auth_token).status == 204
    assert post_feedback(client, account, sid, score=5, issues=()).status == 200
    assert call_row(engine, sid)["provisional"] is False
    summary = summary_of(engine, account, T0.date(), dt.datetime.now(UTC).date())
    assert (summary["call_count"], summary["call_feedback_count"]) == (1, 1)


def test_feedback_posted_under_the_parents_path_moves_with_its_call_to_the_subaccount(client, engine, account):
    """The SPEC's parent-path case: the parent's credentials post, under the parent's path, feedback on
    a call Twilio then names as its subaccount's. The call moves, and the feedback with it: it was
    answered 200, and before it was dropped by the move."""
    owner = make_account(engine, parent=account)
    sid = new_sid(CALL)
    assert post_feedback(client, account, sid).status == 200  # provisional under the parent
    assert post_event(client, event(owner, sid, "initiated", T0, 0), owner.auth_token).status == 204
    row = call_row(engine, sid)
    assert (row["account_sid"], row["provisional"]) == (owner.sid, False)
    assert client.get(feedback_path(account.sid, sid), auth=auth_of(account)).status == 404
    assert client.get(feedback_path(owner.sid, sid), auth=auth_of(owner)).json["quality_score"] == 2
    # The parent still reaches it through the subaccount's path.
    assert client.get(feedback_path(owner.sid, sid), auth=auth_of(account)).json["quality_score"] == 2
    today = dt.datetime.now(UTC).date()
    assert summary_of(engine, account, T0.date(), today)["call_count"] == 0
    moved = summary_of(engine, owner, T0.date(), today)
    assert (moved["call_count"], moved["call_feedback_count"]) == (1, 1)
    # And a confirmed call is not taken away by another account's signed event.
    assert post_event(client, event(account, sid, "initiated", T0 - dt.timedelta(hours=1), 0),
                      account.auth_token).status == 204
    assert (call_row(engine, sid)["account_sid"], call_row(engine, sid)["start_time"]) == (owner.sid, T0)


@pytest.mark.parametrize("poster, sender", [("child", "sibling"), ("child", "parent")])
def test_no_other_move_inside_a_family_takes_a_call_or_drops_its_feedback(client, engine, poster, sender):
    """A sibling's (or, for a subaccount's call, the parent's) signed event took the provisional call
    and deleted the feedback posted with it, answered 200 (issue 21: 174 of 200 in a race). Only the
    parent-path case moves a call; this one stays the poster's, provisional, for `calls sync` or the
    grace (PROVISIONAL_CALL_GRACE_S) to settle, and the operator sees it in `calls provisional`."""
    parent = make_account(engine)
    family = {"parent": parent, "child": make_account(engine, parent=parent),
              "sibling": make_account(engine, parent=parent)}
    sid = new_sid(CALL)
    assert post_feedback(client, family[poster], sid).status == 200
    assert post_event(client, event(family[sender], sid, "initiated", T0, 0), family[sender].auth_token).status == 204
    row = call_row(engine, sid)
    assert (row["account_sid"], row["provisional"]) == (family[poster].sid, True)
    assert (row["claimed_by"], row["claimed_start_time"]) == (family[sender].sid, T0)  # kept as a claim
    assert client.get(feedback_path(family[poster].sid, sid), auth=auth_of(family[poster])).json["quality_score"] == 2
    # The poster's own event confirms it, and the claim goes.
    assert post_event(client, event(family[poster], sid, "initiated", T0, 0), family[poster].auth_token).status == 204
    row = call_row(engine, sid)
    assert (row["account_sid"], row["provisional"], row["claimed_by"]) == (family[poster].sid, False, None)


def test_an_unrelated_accounts_signed_event_cannot_take_a_provisional_call(client, engine, account):
    """A signature proves the sender holds its own account's token, not that Twilio sent the event:
    a stranger who learnt a call SID must not take the call (or drop its feedback) by signing one."""
    stranger = make_account(engine)
    sid = new_sid(CALL)
    assert post_feedback(client, account, sid).status == 200
    assert post_event(client, event(stranger, sid, "initiated", T0, 0), stranger.auth_token).status == 204
    row = call_row(engine, sid)
    assert (row["account_sid"], row["provisional"]) == (account.sid, True)
    assert client.get(feedback_path(account.sid, sid), auth=auth_of(account)).json["quality_score"] == 2
    # The call's own account confirms it as usual.
    assert post_event(client, event(account, sid, "initiated", T0, 0), account.auth_token).status == 204
    assert (call_row(engine, sid)["provisional"], call_row(engine, sid)["start_time"]) == (False, T0)


def auth_of(account) -> tuple[str, str]:
    return account.sid, account.auth_token


@pytest.mark.parametrize("path", ["one statement", "transaction"])
def test_feedback_racing_a_move_of_its_call_never_stays_under_the_wrong_account(engine, redis_client, monkeypatch,
                                                                               path):
    """A post under the parent's path has read its call and is about to write when the subaccount's
    status callback moves the call: the move waits for the post (which holds the call's row). What
    the post wrote meanwhile is not visible to the move's own statement, but is to its trigger, which
    carries it to the subaccount (0013): never left under the parent, never dropped once answered 200. Without the row lock the move went
    first and the post then wrote fresh feedback under the parent, visible to and counted for the
    wrong account for good. Both ways a post writes: the one statement that locks the call and
    writes (paused between the two by a pg_sleep after the lock), and the transaction that follows
    when that statement finds no call of the account (paused in Python before its write)."""
    import threading

    from api import feedback
    from api.factory import create_app

    parent = make_account(engine)
    child = make_account(engine, parent=parent)
    client = WsgiClient(create_app())
    sid = new_sid(CALL)
    assert post_feedback(client, parent, sid).status == 200  # provisional under the parent
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM call_feedback WHERE call_sid = :s"), {"s": sid})  # a first post
    read_the_call, go_on = threading.Event(), threading.Event()
    if path == "one statement":
        statement = feedback.UPSERT_OWN_CALL_FEEDBACK.element.text
        paused = statement.replace(" FOR SHARE)", " FOR SHARE), pause AS (SELECT pg_sleep(2) FROM c)").replace(
            " FROM c\n", " FROM c, pause\n")
        assert paused.count("pause") == 2
        monkeypatch.setattr(feedback, "UPSERT_OWN_CALL_FEEDBACK", text(paused))

        def sleeping() -> bool:
            with engine.connect() as connection:
                return bool(connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = "
                                                    "'PgSleep' AND query LIKE '%pause AS%'")).scalar())

        def held():
            wait_for(sleeping, 10, 0.02, "the post to hold the call")
            read_the_call.set()

        threading.Thread(target=held, daemon=True).start()
    else:
        monkeypatch.setattr(feedback, "UPSERT_OWN_CALL_FEEDBACK", text("SELECT 1 WHERE false"))
        write = feedback.upsert_feedback

        def paused_write(*args, **kwargs):
            read_the_call.set()
            go_on.wait(10)
            return write(*args, **kwargs)

        monkeypatch.setattr(feedback, "upsert_feedback", paused_write)
    results = {}
    post = threading.Thread(target=lambda: results.update(post=post_feedback(client, parent, sid, 1).status))
    post.start()
    assert read_the_call.wait(10)
    move = threading.Thread(target=lambda: results.update(move=post_event(
        client, event(child, sid, "initiated", T0, 0), child.auth_token).status))
    move.start()
    move.join(timeout=1.5)  # with the row held, the move waits here; without, it is done
    go_on.set()
    post.join(timeout=30)
    move.join(timeout=30)
    assert results["move"] == 204 and results["post"] in (200, 404)
    with engine.connect() as connection:
        astray = connection.execute(text("SELECT count(*) FROM call_feedback f JOIN calls c ON c.sid = f.call_sid "
                                         "WHERE f.account_sid <> c.account_sid")).scalar()
    assert astray == 0 and call_row(engine, sid)["account_sid"] == child.sid
    # A post answered 200 is carried to the subaccount with its call, not dropped (0013's trigger sees
    # what was committed while the move waited; the move's own statement did not).
    carried = client.get(feedback_path(child.sid, sid), auth=auth_of(child))
    assert carried.status == (200 if results["post"] == 200 else 404), (results, carried.body)


def test_feedback_for_another_accounts_confirmed_call_is_still_404(client, engine, account):
    owner = make_account(engine)
    sid = new_sid(CALL)
    assert post_event(client, event(owner, sid, "initiated", T0, 0), owner.auth_token).status == 204
    assert post_feedback(client, account, sid).status == 404
    assert call_row(engine, sid)["account_sid"] == owner.sid


# --- accounts with their Twilio identity ------------------------------------------------------------

@pytest.mark.slow
def test_an_account_keeps_its_twilio_sid_and_token_read_from_stdin(client, engine, redis_client):
    sid, token = "AC" + "ab" * 16, "0123456789abcdef" * 2
    made = summaries_cli("accounts", "create", "--sid", sid, "--auth-token-stdin", "--json", stdin=token + "\n")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["sid"] == sid and token not in " ".join(made.args)
    assert token not in made.stdout  # given through stdin to stay off terminals: not printed back
    child_sid = "AC" + "cd" * 16
    child = summaries_cli("accounts", "create", "--sid", child_sid, "--parent", sid, "--auth-token-stdin",
                          stdin="fedcba9876543210" * 2)
    assert child.returncode == 0, child.stderr
    # The backend's credentials work unchanged, and Twilio's signatures with the real token count.
    response = client.get(feedback_path(sid, new_sid(CALL)), auth=(sid, token))
    assert response.status == 404  # authenticated: no such feedback, not 401
    from types import SimpleNamespace

    call = new_sid(CALL)
    assert post_event(client, event(SimpleNamespace(sid=sid), call, "initiated", T0, 0), token).status == 204
    before = snapshot(engine, redis_client)
    for args, stdin, words in (
        (("--sid", sid), token, "already exists"),
        (("--sid", "AC123"), token, "not an account SID"),
        (("--sid", "AC" + "ef" * 16), "not-a-token", "32 lowercase hex"),
        (("--sid", "AC" + "ef" * 16), "", "held no token"),
        (("--sid", "AC" + "ef" * 16, "--parent", child_sid), token, "subaccounts cannot have subaccounts"),
        (("--sid", "AC" + "ef" * 16), None, "both --sid and --auth-token-stdin"),
    ):
        flags = [*args, "--auth-token-stdin"] if stdin is not None else list(args)
        refused = summaries_cli("accounts", "create", *flags, stdin=stdin or "")
        assert refused.returncode == 2 and words in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    assert snapshot(engine, redis_client) == before


@pytest.mark.slow
def test_live_traffic_end_to_end_through_gunicorn_twilio_8_and_a_worker(engine, redis_client, tmp_path):
    """The issue's acceptance: an imported account, signed status callbacks over a real socket (a
    retry, a multi-event call, a lone `completed`, a call whose feedback came first), feedback
    through twilio 8.13.0, and a summary that counts each call once and each feedback once; a
    forged callback stores nothing."""
    import urllib.error
    import urllib.parse
    import urllib.request

    from twilio.rest import Client

    from tests.processes import celery_worker, gunicorn, wait_for

    sid, token = "AC" + "5e" * 16, "a1b2c3d4e5f60718" * 2
    assert summaries_cli("accounts", "create", "--sid", sid, "--auth-token-stdin", stdin=token).returncode == 0
    web, base_url = gunicorn(tmp_path, workers=2)
    worker = celery_worker(tmp_path, "live", queues="summaries", concurrency=1)
    try:
        hook = base_url + "/twilio/voice/status"

        def callback(form: dict, key: str = token) -> int:
            data = urllib.parse.urlencode(form).encode()
            request = urllib.request.Request(hook, data=data, headers={
                "X-Twilio-Signature": RequestValidator(key).compute_signature(hook, form)})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as error:
                return error.code

        client = Client(sid, token)
        client.api.base_url = base_url
        account = type("Imported", (), {"sid": sid})()
        start = dt.datetime.now(UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
        multi, lone, quiet, raced = (new_sid(CALL) for _ in range(4))
        assert client.calls(raced).feedback().update(quality_score=1, issue=["one-way-audio"]).quality_score == 1
        for form in (event(account, multi, "initiated", start, 0), event(account, multi, "initiated", start, 0),
                     event(account, multi, "answered", start + dt.timedelta(seconds=9), 2),
                     event(account, multi, "completed", start + dt.timedelta(seconds=99), 3, CallDuration="90"),
                     event(account, lone, "completed", start + dt.timedelta(seconds=60), 3, CallDuration="30"),
                     event(account, quiet, "initiated", start, 0),
                     event(account, raced, "initiated", start, 0)):
            assert callback(form) == 204
        forged = new_sid(CALL)
        assert callback(event(account, forged, "initiated", start, 0), key="f" * 32) == 403
        assert call_row(engine, forged) is None
        client.calls(multi).feedback().update(quality_score=4, issue=["audio-latency"])
        client.calls(multi).feedback().update(quality_score=5)  # a second post replaces the entry
        client.calls(lone).feedback().update(quality_score=3, issue=["audio-latency", "dropped-call"])
        today = dt.datetime.now(UTC).date()
        created = client.calls.feedback_summaries.create(start_date=today - dt.timedelta(days=1), end_date=today)
        summaries = client.calls.feedback_summaries(created.sid)
        done = wait_for(lambda: (s := summaries.fetch()).status == "completed" and s, 60, 0.2,
                        what="the summary to complete")
        assert (done.call_count, done.call_feedback_count) == (4, 3)
        assert done.quality_score_average == 3.0 and done.quality_score_median == 3.0
        # multi's second post replaced its audio-latency; lone and raced bring one issue each.
        assert {i["description"]: i["count"] for i in done.issues} == {"audio-latency": 1, "dropped-call": 1,
                                                                       "one-way-audio": 1}
        expected = expected_for(engine, sid, False, today - dt.timedelta(days=1), today)
        assert (expected["call_count"], expected["call_feedback_count"]) == (4, 3)
    finally:
        worker.stop()
        web.stop()
