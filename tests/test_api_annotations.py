"""Call annotations through the WSGI app (SPEC, Call Annotations): update and fetch every field, an
update changes only what it carries, each bad value a 400 naming its parameter that writes nothing,
the account-family rules, and the call's feedback entry as the SPEC says an annotation writes it."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest
from sqlalchemy import text

from shared.accounts.sids import CALL, new_sid
from tests.support import feedback_path, make_account, make_calls, snapshot
from tests.test_api_errors import assert_error

UTC = dt.timezone.utc
FIELDS = ["call_sid", "account_sid", "answered_by", "connectivity_issue", "quality_issues", "spam", "call_score",
          "comment", "incident", "url"]
EVERYTHING = {"AnsweredBy": "human", "ConnectivityIssue": "dropped_call", "QualityIssues": "low_volume,choppy_robotic",
              "Spam": "true", "CallScore": "2", "Comment": "this is a call",
              "Incident": "https://twilio.zendesk.com/support/tickets/17353089"}
NOTHING = dict.fromkeys(["answered_by", "connectivity_issue", "quality_issues", "spam", "call_score", "comment",
                         "incident"])


def annotation_path(call_sid: str) -> str:
    return f"/v1/Voice/{call_sid}/Annotation"


def annotate(client, account, call_sid: str, form: dict, as_=None):
    caller = as_ or account
    return client.post(annotation_path(call_sid), form=form, auth=(caller.sid, caller.auth_token))


def fetched(client, account, call_sid: str, as_=None):
    caller = as_ or account
    return client.get(annotation_path(call_sid), auth=(caller.sid, caller.auth_token))


def entry(engine, call_sid: str) -> dict | None:
    with engine.connect() as connection:
        row = connection.execute(text("SELECT account_sid, quality_score, issues, date_created, date_updated "
                                      "FROM call_feedback WHERE call_sid = :s"), {"s": call_sid}).first()
    return row._asdict() if row else None


@pytest.fixture
def account(engine, redis_client):
    return make_account(engine)


@pytest.fixture
def call_sid(engine, account):
    return make_calls(engine, account, [dt.datetime(2024, 1, 2, 12, tzinfo=UTC)])[0]


def test_update_and_fetch_round_trip_every_field(client, account, call_sid):
    updated = annotate(client, account, call_sid, EVERYTHING)
    assert updated.status == 200, updated.body
    assert list(updated.json) == FIELDS  # exactly the reference's fields, in its order
    assert updated.json == {
        "call_sid": call_sid, "account_sid": account.sid, "answered_by": "human", "connectivity_issue": "dropped_call",
        "quality_issues": ["low_volume", "choppy_robotic"], "spam": True, "call_score": 2,
        "comment": "this is a call", "incident": "https://twilio.zendesk.com/support/tickets/17353089",
        "url": f"http://localhost/v1/Voice/{call_sid}/Annotation"}
    again = fetched(client, account, call_sid)
    assert again.status == 200 and again.json == updated.json


def test_an_update_changes_only_what_it_carries_and_an_empty_value_clears(client, account, call_sid):
    first = annotate(client, account, call_sid, EVERYTHING).json
    second = annotate(client, account, call_sid, {"Comment": "called back", "Spam": "False"}).json
    assert second == {**first, "comment": "called back", "spam": False}
    third = annotate(client, account, call_sid, {"QualityIssues": " echo , dtmf,echo", "AnsweredBy": ""}).json
    assert third == {**second, "quality_issues": ["echo", "dtmf"], "answered_by": None}
    assert annotate(client, account, call_sid, {}).json == third  # nothing carried, nothing changed
    cleared = annotate(client, account, call_sid, dict.fromkeys(EVERYTHING, "")).json
    assert cleared == {**third, **NOTHING}
    assert fetched(client, account, call_sid).json == cleared


def test_a_known_call_without_an_annotation_answers_its_fields_null(client, account, call_sid):
    body = fetched(client, account, call_sid).json
    assert body == {"call_sid": call_sid, "account_sid": account.sid, **NOTHING,
                    "url": f"http://localhost/v1/Voice/{call_sid}/Annotation"}


def test_the_url_is_the_public_base_urls_behind_a_proxy(engine, redis_client, account, call_sid, monkeypatch):
    from api.factory import create_app
    from shared.platform.config import Settings
    from tests.support import WsgiClient

    monkeypatch.setenv("PUBLIC_BASE_URL", "https://summaries.example.com")
    client = WsgiClient(create_app(Settings.from_env()))
    assert fetched(client, account, call_sid).json["url"] == \
        f"https://summaries.example.com/v1/Voice/{call_sid}/Annotation"


@pytest.mark.parametrize("form, parameter", [
    ({"CallScore": "0"}, "CallScore"),
    ({"CallScore": "6"}, "CallScore"),
    ({"CallScore": "2.5"}, "CallScore"),
    ({"CallScore": "two"}, "CallScore"),
    ({"CallScore": ["2", "3"]}, "CallScore"),
    ({"AnsweredBy": "robot"}, "AnsweredBy"),
    ({"AnsweredBy": "unknown_answered_by"}, "AnsweredBy"),
    ({"AnsweredBy": "Human"}, "AnsweredBy"),
    ({"ConnectivityIssue": "dropped-call"}, "ConnectivityIssue"),
    ({"ConnectivityIssue": "dropped_call,caller_id"}, "ConnectivityIssue"),
    ({"QualityIssues": "latency,noise"}, "QualityIssues"),
    ({"QualityIssues": "latency,,echo"}, "QualityIssues"),
    ({"QualityIssues": "latency,"}, "QualityIssues"),
    ({"QualityIssues": ["latency", "echo"]}, "QualityIssues"),
    ({"Spam": "yes"}, "Spam"),
    ({"Spam": "1"}, "Spam"),
    ({"Spam": " true"}, "Spam"),
    ({"CallScore": " 3"}, "CallScore"),
    ({"CallScore": " "}, "CallScore"),
    ({"AnsweredBy": "human "}, "AnsweredBy"),
    ({"Comment": "x" * 101}, "Comment"),
    ({"Comment": "nul\x00byte"}, "Comment"),
    ({"Incident": "é" * 101}, "Incident"),
    ({"CallScore": "3", "Incident": "y" * 101}, "Incident"),  # a good value beside a bad one: nothing written
])
def test_each_bad_value_is_a_400_naming_its_parameter_and_changes_nothing(client, engine, redis_client, account,
                                                                        call_sid, form, parameter):
    annotate(client, account, call_sid, {"CallScore": "4", "Comment": "before"})
    before = snapshot(engine, redis_client)
    assert_error(annotate(client, account, call_sid, form), 400, 20001, parameter)
    assert snapshot(engine, redis_client) == before
    unknown = new_sid(CALL)  # nor is a call recorded for a bad update of an unknown one
    assert_error(annotate(client, account, unknown, form), 400, 20001, parameter)
    assert snapshot(engine, redis_client) == before


def test_texts_of_100_characters_and_any_case_of_a_boolean_are_taken(client, account, call_sid):
    body = annotate(client, account, call_sid, {"Comment": "é" * 100, "Incident": "i" * 100, "Spam": "TRUE"}).json
    assert (len(body["comment"]), len(body["incident"]), body["spam"]) == (100, 100, True)


def test_the_account_family_rules(client, engine, redis_client):
    parent = make_account(engine)
    child, sibling, stranger = make_account(engine, parent), make_account(engine, parent), make_account(engine)
    own, childs = (make_calls(engine, owner, [dt.datetime(2024, 1, 2, tzinfo=UTC)])[0] for owner in (parent, child))
    # A parent's credentials reach its subaccount's call; the answer names the call's account.
    by_parent = annotate(client, child, childs, {"CallScore": "3"}, as_=parent)
    assert by_parent.status == 200 and by_parent.json["account_sid"] == child.sid
    assert fetched(client, child, childs, as_=parent).json["call_score"] == 3
    assert entry(engine, childs)["account_sid"] == child.sid
    before = snapshot(engine)  # (the refused updates spend their callers' rate limit, as a post to a 404 does)
    for caller, call in ((child, own), (sibling, childs), (stranger, childs), (stranger, own)):
        assert_error(annotate(client, caller, call, {"CallScore": "1"}), 404, 20404)
        assert_error(fetched(client, caller, call), 404, 20404)
    assert snapshot(engine) == before
    wrong = client.post(annotation_path(own), form={"CallScore": "1"}, auth=(parent.sid, "0" * 32))
    assert_error(wrong, 401, 20003)
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    for malformed in ("CA123", "ca" + "0" * 32, "CA" + "0" * 31 + "G"):
        assert_error(annotate(client, parent, malformed, {"CallScore": "1"}), 404, 20404)
    assert snapshot(engine) == before


def test_an_unknown_call_is_recorded_as_provisional_under_the_credentials_account(client, engine, account):
    sid = new_sid(CALL)
    assert_error(fetched(client, account, sid), 404, 20404)  # a fetch records nothing
    assert annotate(client, account, sid, {"CallScore": "4", "QualityIssues": "dtmf"}).status == 200
    with engine.connect() as connection:
        call = connection.execute(text("SELECT account_sid, provisional FROM calls WHERE sid = :s"), {"s": sid}).one()
    assert tuple(call) == (account.sid, True)
    assert (entry(engine, sid)["quality_score"], entry(engine, sid)["issues"]) == (4, ["digits-not-captured"])


def test_a_405_names_the_methods_the_path_has(client, account, call_sid):
    response = client.delete(annotation_path(call_sid), auth=(account.sid, account.auth_token))
    assert_error(response, 405, 20004)
    assert response.headers["Allow"] == "GET, HEAD, POST"


# --- the call's feedback entry ----------------------------------------------------------------------

@pytest.mark.parametrize("form, issues", [
    ({"QualityIssues": "latency"}, ["audio-latency"]),
    ({"QualityIssues": "dtmf"}, ["digits-not-captured"]),
    ({"QualityIssues": "owa"}, ["one-way-audio"]),
    ({"QualityIssues": "choppy_robotic,echo,static_noise,low_volume"}, ["imperfect-audio"]),
    ({"QualityIssues": "no_quality_issue"}, []),
    ({"ConnectivityIssue": "dropped_call"}, ["dropped-call"]),
    ({"ConnectivityIssue": "caller_id"}, ["incorrect-caller-id"]),
    ({"ConnectivityIssue": "invalid_number"}, []),
    ({"ConnectivityIssue": "number_reachability"}, []),
    ({"Spam": "true"}, ["unsolicited-call"]),
    ({"Spam": "false", "AnsweredBy": "machine", "Comment": "c", "Incident": "i"}, []),
    ({"QualityIssues": "owa,latency,echo,dtmf", "ConnectivityIssue": "caller_id", "Spam": "True"},
     ["audio-latency", "digits-not-captured", "imperfect-audio", "incorrect-caller-id", "one-way-audio",
      "unsolicited-call"]),
])
def test_a_scored_annotations_issues_map_to_the_feedback_issues(client, engine, account, call_sid, form, issues):
    assert annotate(client, account, call_sid, {**form, "CallScore": "3"}).status == 200
    written = entry(engine, call_sid)
    assert (written["account_sid"], written["quality_score"], written["issues"]) == (account.sid, 3, issues)


def test_the_entry_keeps_when_the_call_was_first_scored_and_the_later_write_wins(client, engine, account, call_sid):
    def post(score, issues=()):
        response = client.post(feedback_path(account.sid, call_sid), form={"QualityScore": score, "Issue": issues},
                               auth=(account.sid, account.auth_token))
        assert response.status == 200
        return response.json

    assert annotate(client, account, call_sid, {"Comment": "no score yet", "Spam": "true"}).status == 200
    assert entry(engine, call_sid) is None  # an unscored annotation is no feedback
    annotate(client, account, call_sid, {"CallScore": "2"})
    first = entry(engine, call_sid)
    assert (first["quality_score"], first["issues"]) == (2, ["unsolicited-call"])
    posted = post(5, ["post-dial-delay"])  # a Feedback post after it: the post's score and issues
    assert (posted["quality_score"], posted["issues"]) == (5, ["post-dial-delay"])
    assert email.utils.parsedate_to_datetime(posted["date_created"]) == first["date_created"].replace(microsecond=0)
    annotate(client, account, call_sid, {"Comment": "looked again"})  # still scored: the annotation writes it again
    again = entry(engine, call_sid)
    assert (again["quality_score"], again["issues"], again["date_created"]) == (2, ["unsolicited-call"],
                                                                                 first["date_created"])
    assert again["date_updated"] > first["date_updated"]
    annotate(client, account, call_sid, {"CallScore": ""})  # cleared: the entry goes
    assert entry(engine, call_sid) is None
    post(4)
    annotate(client, account, call_sid, {"Incident": "T-1"})  # unscored: a post's entry stays as it is
    assert entry(engine, call_sid)["quality_score"] == 4
    annotate(client, account, call_sid, {"CallScore": ""})  # clearing removes the entry, the post's too
    assert entry(engine, call_sid) is None
    assert fetched(client, account, call_sid).json["incident"] == "T-1"


def test_annotation_updates_spend_the_feedback_rate_limit(engine, redis_client, monkeypatch):
    from api.factory import create_app
    from shared.platform.config import Settings
    from tests.support import WsgiClient

    monkeypatch.setenv("FEEDBACK_RATE_LIMIT", "3/minute")
    client = WsgiClient(create_app(Settings.from_env()))
    account, other = make_account(engine), make_account(engine)
    calls = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=UTC)] * 4)
    assert client.post(feedback_path(account.sid, calls[0]), form={"QualityScore": "5"},
                       auth=(account.sid, account.auth_token)).status == 200
    assert_error(annotate(client, account, calls[1], {"CallScore": "9"}), 400, 20001)  # refused: spends nothing
    assert [annotate(client, account, sid, {"CallScore": "2"}).status for sid in calls[1:]] == [200, 200, 429]
    refused = annotate(client, account, calls[0], {"Comment": "x"})
    assert_error(refused, 429, 20429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert fetched(client, account, calls[3]).status == 200  # a fetch is not counted
    assert annotate(client, other, new_sid(CALL), {"CallScore": "1"}).status == 200  # each account its own


def test_the_sql_mapping_is_the_python_one_for_every_annotation(engine):
    """WRITE maps in SQL (ISSUES_SQL); `summaries calls show` and the tests read the same table in
    Python (Annotation.feedback_issues): the two agree on every combination of values."""
    import itertools
    import json

    from shared.calls.annotations import ISSUES_SQL, Annotation
    from shared.models import CONNECTIVITY_ISSUES, QUALITY_ISSUES

    rows = [{"quality_issues": list(quality) or None, "connectivity_issue": connectivity, "spam": spam}
            for size in range(len(QUALITY_ISSUES) + 1) for quality in itertools.combinations(QUALITY_ISSUES, size)
            for connectivity in (None, *CONNECTIVITY_ISSUES) for spam in (None, False, True)]
    with engine.connect() as connection:
        mapped = connection.execute(text(
            f"SELECT {ISSUES_SQL} FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "AS a(quality_issues text[], connectivity_issue text, spam boolean)"), {"rows": json.dumps(rows)}).scalars()
        in_sql = [list(issues) for issues in mapped]
    in_python = [Annotation(connectivity_issue=row["connectivity_issue"], spam=row["spam"],
                            quality_issues=tuple(row["quality_issues"] or ()) or None).feedback_issues() for row in rows]
    assert len(rows) == 256 * 6 * 3 and in_sql == in_python


def test_an_update_that_carries_nothing_changes_nothing(client, engine, account):
    """Answered as a fetch: it re-asserted the annotation's score over a later Feedback post, and for
    an unknown SID recorded a provisional call (found by review)."""
    from shared.accounts.sids import CALL, new_sid
    from tests.support import snapshot

    before = snapshot(engine)
    unknown = client.post(f"/v1/Voice/{new_sid(CALL)}/Annotation", form={}, auth=(account.sid, account.auth_token))
    assert unknown.status == 404 and snapshot(engine) == before
