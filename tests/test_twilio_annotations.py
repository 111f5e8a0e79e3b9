"""twilio's own Voice Insights annotation resource, `client.insights.v1.calls(sid).annotation()`, with
its insights domain pointed at the API under gunicorn: twilio 8.13.0 (this virtualenv) and the
newest 9.x (.venv-twilio9) run the same script, over a real socket. And the issue's acceptance: a
twilio 9.x script that only annotates calls gets, through clients/python, a completed Feedback
Summary whose numbers and issues are those the SPEC's rules give its annotations."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from shared.accounts.sids import CALL, new_sid
from tests.reference import CallRow, FeedbackRow, expected_summary
from tests.support import make_account, make_calls
from tests.test_annotation_summaries import Model
from tests.test_client_addon import check_installed, run_python, twilio_python

pytestmark = pytest.mark.slow  # gunicorn and a worker, as processes; scripts in a second interpreter

UTC = dt.timezone.utc
SHOWN = ("call_sid", "account_sid", "answered_by", "connectivity_issue", "quality_issues", "spam", "call_score",
         "comment", "incident", "url")
PREAMBLE = '''
import json
import sys

import twilio
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

SHOWN = %r


def shown(annotation):
    return {name: [type(getattr(annotation, name)).__name__, getattr(annotation, name)] for name in SHOWN}


def error_of(call):
    try:
        call()
    except TwilioRestException as error:
        return {"class": type(error).__name__, "status": error.status, "code": error.code, "msg": error.msg}
    return None


def service_client(base_url):
    client = Client()  # TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment
    client.edge = client.region = None  # after Client(): the library would rewrite this service's host
    client.insights.base_url = base_url
    client.api.base_url = base_url
    return client
''' % (SHOWN,)

ROUND_TRIP = PREAMBLE + '''
base_url, own, childs, foreign = sys.argv[1:5]
client = service_client(base_url)
annotation = client.insights.v1.calls(own).annotation()
print(json.dumps({
    "twilio": twilio.__version__,
    "updated": shown(annotation.update(answered_by="human", connectivity_issue="dropped_call",
                                       quality_issues="low_volume,choppy_robotic", spam=True, call_score=2,
                                       comment="this is a call",
                                       incident="https://twilio.zendesk.com/support/tickets/17353089")),
    "fetched": shown(annotation.fetch()),
    "partial": shown(annotation.update(comment="called back", spam=False)),
    "cleared": shown(annotation.update(call_score="", quality_issues="")),
    "childs": shown(client.insights.v1.calls(childs).annotation().update(call_score=4, quality_issues="dtmf")),
    "bad_score": error_of(lambda: annotation.update(call_score=9)),
    "bad_issues": error_of(lambda: annotation.update(quality_issues="latency,noise")),
    "bad_connectivity": error_of(lambda: annotation.update(connectivity_issue="dropped-call")),
    "long_comment": error_of(lambda: annotation.update(comment="x" * 101)),
    "foreign_fetch": error_of(lambda: client.insights.v1.calls(foreign).annotation().fetch()),
    "foreign_update": error_of(lambda: client.insights.v1.calls(foreign).annotation().update(call_score=1)),
    "after": shown(annotation.fetch()),
}))
'''


@pytest.fixture
def account(engine, redis_client):
    return make_account(engine)


@pytest.mark.parametrize("major", [8, 9])
def test_update_and_fetch_every_field_through_the_official_library(server, account, engine, tmp_path, major):
    child, stranger = make_account(engine, account), make_account(engine)
    own, childs, foreign = (make_calls(engine, owner, [dt.datetime(2024, 1, 2, 12, tzinfo=UTC)])[0]
                            for owner in (account, child, stranger))
    python, pythonpath = twilio_python(major)
    result = run_python(python, ROUND_TRIP, [server, own, childs, foreign], account, tmp_path, pythonpath)
    assert result["twilio"].split(".")[0] == str(major)
    url = f"{server}/v1/Voice/{own}/Annotation"
    updated = {"call_sid": ["str", own], "account_sid": ["str", account.sid], "answered_by": ["str", "human"],
               "connectivity_issue": ["str", "dropped_call"],
               "quality_issues": ["list", ["low_volume", "choppy_robotic"]], "spam": ["bool", True],
               "call_score": ["int", 2], "comment": ["str", "this is a call"],
               "incident": ["str", "https://twilio.zendesk.com/support/tickets/17353089"], "url": ["str", url]}
    assert result["updated"] == updated and result["fetched"] == updated
    partial = {**updated, "comment": ["str", "called back"], "spam": ["bool", False]}
    assert result["partial"] == partial  # only what the update carried changed
    cleared = {**partial, "call_score": ["NoneType", None], "quality_issues": ["NoneType", None]}
    assert result["cleared"] == cleared and result["after"] == cleared  # and no refused update changed anything
    assert result["childs"]["account_sid"] == ["str", child.sid] and result["childs"]["call_score"] == ["int", 4]
    for name, parameter in (("bad_score", "CallScore"), ("bad_issues", "QualityIssues"),
                            ("bad_connectivity", "ConnectivityIssue"), ("long_comment", "Comment")):
        error = result[name]
        assert (error["class"], error["status"], error["code"]) == ("TwilioRestException", 400, 20001), error
        assert parameter in error["msg"], error
    for name in ("foreign_fetch", "foreign_update"):
        assert (result[name]["status"], result[name]["code"]) == (404, 20404)


ANNOTATE_AND_SUMMARISE = PREAMBLE + '''
import datetime as dt
import time

import twilio_feedback_summaries
from twilio_feedback_summaries import feedback_summaries

base_url, updates, start_date, end_date = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
client = service_client(base_url)
for call_sid, params in updates:
    client.insights.v1.calls(call_sid).annotation().update(**params)
summaries = feedback_summaries(client)
sid = summaries.create(start_date=start_date, end_date=end_date).sid
deadline = time.monotonic() + 90
while (summary := summaries(sid).fetch()).status not in ("completed", "failed") and time.monotonic() < deadline:
    time.sleep(0.2)
number = lambda value: float(value) if value is not None else None
print(json.dumps({
    "twilio": twilio.__version__, "module": twilio_feedback_summaries.__file__, "status": summary.status,
    "call_count": summary.call_count, "call_feedback_count": summary.call_feedback_count,
    "quality_score_average": number(summary.quality_score_average),
    "quality_score_median": number(summary.quality_score_median),
    "quality_score_standard_deviation": number(summary.quality_score_standard_deviation),
    "issues": summary.issues,
}))
'''
# What the script sends, call by call (twilio's keyword arguments); "" clears a value.
UPDATES = [
    {"call_score": 2, "quality_issues": "latency,echo", "connectivity_issue": "dropped_call"},
    {"call_score": 5},
    {"call_score": 1, "spam": True, "connectivity_issue": "caller_id"},
    {"quality_issues": "owa", "comment": "no score: no feedback"},
    {"call_score": 3, "quality_issues": "dtmf,static_noise,low_volume"},
    {"answered_by": "machine", "call_score": 4, "connectivity_issue": "invalid_number"},
]
FOLLOW_UPS = {0: {"call_score": 3}, 1: {"call_score": ""}, 3: {"call_score": 2}, 4: {"quality_issues": "owa"}}


def _form(params: dict) -> dict:
    """twilio's keyword arguments as the form parameters the library sends (9.x's booleans)."""
    names = {"call_score": "CallScore", "quality_issues": "QualityIssues", "connectivity_issue": "ConnectivityIssue",
             "spam": "Spam", "comment": "Comment", "answered_by": "AnsweredBy"}
    return {names[k]: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()}


@pytest.mark.parametrize("major", [9, 8])
def test_a_script_that_only_annotates_gets_the_summary_of_its_annotations(server, account, engine, tmp_path, major):
    from tests.processes import celery_worker

    now = dt.datetime.now(UTC)
    starts = [now - dt.timedelta(minutes=5 + i) for i in range(4)]
    known = make_calls(engine, account, starts)
    unknown = [new_sid(CALL), new_sid(CALL)]  # their status callbacks have not come yet
    sids = known + unknown
    updates = [[sid, params] for sid, params in zip(sids, UPDATES)]
    updates += [[sids[index], params] for index, params in FOLLOW_UPS.items()]
    models = {sid: Model() for sid in sids}
    for sid, params in updates:
        models[sid].annotate(_form(params), now.date())

    worker = celery_worker(tmp_path, f"annotations-{major}", queues="summaries", concurrency=1)
    try:
        python, pythonpath = twilio_python(major)
        start_date, end_date = (now - dt.timedelta(days=1)).date(), now.date()
        result = run_python(python, ANNOTATE_AND_SUMMARISE, [server, json.dumps(updates), str(start_date),
                                                             str(end_date)], account, tmp_path, pythonpath)
    finally:
        worker.stop()
    check_installed(result)
    assert result["twilio"].split(".")[0] == str(major)
    calls = [CallRow(account.sid, start) for start in starts] + [CallRow(account.sid, now)] * len(unknown)
    feedback = [FeedbackRow(account.sid, model.entry[0], tuple(model.entry[1]), now)
                for model in models.values() if model.entry is not None]
    expected = expected_summary(calls, feedback, {account.sid}, start_date, end_date)
    assert result["status"] == "completed"
    assert {name: result[name] for name in expected} == expected
    assert (expected["call_count"], expected["call_feedback_count"]) == (6, 5)  # the model is not vacuous
