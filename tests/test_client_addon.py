"""clients/python, the add-on that gives twilio 8.x and 9.x clients the Feedback Summary resource back,
against the API under gunicorn over a real socket: with twilio 8.13.0 in this process (held to the
library's own `client.calls.feedback_summaries`: same attributes, same exceptions), and with the
newest twilio 9.x in the second virtualenv that `make test` builds (.venv-twilio9), through a script
that prints what it saw as JSON."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from tests.processes import ROOT
from tests.support import add_feedback, make_account, make_calls

ADDON_DIR = ROOT / "clients" / "python"
ADDON_SOURCE = ADDON_DIR / "twilio_feedback_summaries.py"
TWILIO9_PYTHON = ROOT / ".venv-twilio9" / "bin" / "python"
SUMMARY_SID = re.compile(r"FS[0-9a-f]{32}")

sys.path.insert(0, str(ADDON_DIR))  # the add-on as a user of twilio 8.x would have it, from the checkout
import twilio_feedback_summaries  # noqa: E402
from twilio_feedback_summaries import feedback_summaries  # noqa: E402

pytestmark = pytest.mark.slow  # gunicorn, as a process; a script in a second interpreter


@pytest.fixture
def account(engine, redis_client):
    return make_account(engine)


@pytest.fixture
def completed_sid(server, account, engine):
    """A completed summary with numbers and issues: created through the API, computed by the worker's
    task in this process."""
    from worker.summaries import compute_summary  # the Celery app reads the test services at import

    calls = make_calls(engine, account, [dt.datetime(2024, 1, day, 12) for day in range(1, 8)])
    for call_sid, score, issues in zip(calls, (1, 2, 4, 5, 5), (["dropped-call", "imperfect-audio"],
                                                                ["imperfect-audio"], [], [], [])):
        add_feedback(engine, call_sid, account, score, issues, dt.datetime(2024, 1, 10, 9))
    sid = library(account, server).create(start_date=dt.date(2024, 1, 1), end_date=dt.date(2024, 1, 31)).sid
    compute_summary.apply(args=[sid])
    return sid


def twilio_client(account, base_url: str, **kwargs) -> Client:
    client = Client(account.sid, account.auth_token, **kwargs)
    client.api.base_url = base_url
    return client


def library(account, base_url: str):
    """twilio 8.13.0's own resource, the reference the add-on is held to."""
    return twilio_client(account, base_url).calls.feedback_summaries


def as_json(summary) -> dict:
    """A summary's public attributes, each as [type name, JSON value]; also run in the script below."""
    shown = {}
    for name, value in sorted(vars(summary).items()):
        if not name.startswith("_"):
            plain = value.isoformat() if hasattr(value, "isoformat") else \
                str(value) if type(value).__name__ == "Decimal" else value
            shown[name] = [type(value).__name__, plain]
    return shown


def error_of(call) -> dict | None:
    try:
        call()
    except TwilioRestException as error:
        return {"status": error.status, "code": error.code, "msg": error.msg, "uri": error.uri,
                "method": error.method}
    return None


class RecordingHttpClient(TwilioHttpClient):
    """The library's own HTTP client, noting each request it sends."""

    def __init__(self):
        super().__init__()
        self.sent = []

    def request(self, method, url, params=None, data=None, headers=None, **kwargs):
        self.sent.append({"method": method, "url": url, "data": data, "headers": dict(headers or {})})
        return super().request(method, url, params=params, data=data, headers=headers, **kwargs)


def test_the_addon_under_test_is_the_checkout_and_twilio_is_8():
    import twilio

    assert twilio.__version__ == "8.13.0"
    assert twilio_feedback_summaries.__file__ == str(ADDON_SOURCE)


def test_twilio_8_create_with_an_idempotency_key_fetch_delete(server, account):
    http = RecordingHttpClient()
    client = Client(account.sid, account.auth_token, http_client=http)
    summaries = feedback_summaries(client)
    client.api.base_url = server  # read at each request, so set after the resource was made as well
    params = dict(start_date=dt.date(2024, 1, 1), end_date="2024-01-31", include_subaccounts=True,
                  status_callback="https://example.com/done", status_callback_method="GET",
                  idempotency_key="january-2024")

    created = summaries.create(**params)
    assert SUMMARY_SID.fullmatch(created.sid) and created.account_sid == account.sid
    assert (created.status, created.include_subaccounts) == ("queued", True)
    assert (created.start_date, created.end_date) == (dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert isinstance(created.date_created, dt.datetime) and created.date_created.tzinfo == dt.timezone.utc
    assert created.call_count is None and created.issues is None
    assert http.sent[0] == {
        "method": "POST", "url": f"{server}/2010-04-01/Accounts/{account.sid}/Calls/FeedbackSummary.json",
        "data": {"StartDate": "2024-01-01", "EndDate": "2024-01-31", "IncludeSubaccounts": "true",
                 "StatusCallback": "https://example.com/done", "StatusCallbackMethod": "GET"},
        "headers": {**http.sent[0]["headers"], "Idempotency-Key": "january-2024"},
    }
    assert summaries.create(**params).sid == created.sid  # the same key: the original summary

    fetched = summaries(created.sid).fetch()
    reference = library(account, server)(created.sid).fetch()
    assert as_json(fetched) == as_json(reference) == as_json(created.fetch())
    assert repr(fetched) == repr(reference)

    assert created.delete() is True
    missing = error_of(summaries(created.sid).fetch)
    assert (missing["status"], missing["code"]) == (404, 20404)
    assert missing["uri"] == f"/Accounts/{account.sid}/Calls/FeedbackSummary/{created.sid}.json"
    assert missing == error_of(library(account, server)(created.sid).fetch)  # exactly as the library raises
    assert error_of(summaries.get(created.sid).delete) == error_of(library(account, server)(created.sid).delete)
    assert {request["method"] for request in http.sent} == {"POST", "GET", "DELETE"}  # all by the client's http


def test_twilio_8_errors_raise_what_the_library_raises(server, account):
    summaries = feedback_summaries(twilio_client(account, server))
    bad_date = error_of(lambda: summaries.create(start_date="2024-02-30", end_date="2024-03-01"))
    assert (bad_date["status"], bad_date["code"], bad_date["method"]) == (400, 20001, "POST")
    assert "StartDate" in bad_date["msg"]
    assert bad_date == error_of(lambda: library(account, server).create(start_date="2024-02-30",
                                                                        end_date="2024-03-01"))
    reversed_dates = error_of(lambda: summaries.create(start_date=dt.date(2024, 2, 1), end_date=dt.date(2024, 1, 1)))
    assert (reversed_dates["status"], reversed_dates["code"]) == (400, 20001) and "EndDate" in reversed_dates["msg"]

    wrong_token = feedback_summaries(twilio_client(SimpleNamespace(sid=account.sid, auth_token="0" * 32), server))
    unauthorized = error_of(wrong_token("FS" + "0" * 32).fetch)
    assert (unauthorized["status"], unauthorized["code"]) == (401, 20003)


def test_twilio_8_a_completed_summary_reads_as_the_library_reads_it(server, account, completed_sid):
    summary = feedback_summaries(twilio_client(account, server))(completed_sid).fetch()
    assert (summary.status, summary.call_count, summary.call_feedback_count) == ("completed", 7, 5)
    assert (float(summary.quality_score_average), float(summary.quality_score_median)) == (3.4, 4.0)
    assert [issue["description"] for issue in summary.issues] == ["imperfect-audio", "dropped-call"]
    assert as_json(summary) == as_json(library(account, server)(completed_sid).fetch())


def test_twilio_8_subaccounts(server, account, engine):
    child = make_account(engine, account)
    as_child = feedback_summaries(twilio_client(account, server, account_sid=child.sid))
    assert as_child.create(start_date="2024-01-01", end_date="2024-01-01").account_sid == child.sid
    named = feedback_summaries(twilio_client(account, server), account_sid=child.sid)
    created = named.create(start_date="2024-01-01", end_date="2024-01-02")
    assert created.account_sid == child.sid and named(created.sid).fetch().sid == created.sid


SCRIPT = inspect.getsource(as_json) + '''
import datetime as dt
import json
import sys

import twilio
import twilio_feedback_summaries
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from twilio_feedback_summaries import feedback_summaries


def error_of(call):
    try:
        call()
    except TwilioRestException as error:
        return {"class": type(error).__module__ + "." + type(error).__qualname__, "status": error.status,
                "code": error.code, "msg": error.msg, "uri": error.uri, "method": error.method}
    return None


base_url, completed_sid = sys.argv[1:3]
client = Client()  # TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN from the environment
client.api.base_url = base_url
summaries = feedback_summaries(client)
params = dict(start_date=dt.date(2024, 1, 1), end_date="2024-01-31", include_subaccounts=True,
              status_callback="https://example.com/done", status_callback_method="GET", idempotency_key="run-1")
created = summaries.create(**params)
replayed = summaries.create(**params)
fetched = summaries(created.sid).fetch()
print(json.dumps({
    "twilio": twilio.__version__,
    "module": twilio_feedback_summaries.__file__,
    "created": as_json(created),
    "replayed_sid": replayed.sid,
    "fetched": as_json(fetched),
    "deleted": summaries(created.sid).delete(),
    "after_delete": error_of(summaries(created.sid).fetch),
    "bad_date": error_of(lambda: summaries.create(start_date="2024-02-30", end_date="2024-03-01")),
    "completed": as_json(summaries(completed_sid).fetch()),
}))
'''


def run_script(python, account, server, completed_sid, tmp_path, pythonpath: str | None) -> dict:
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "TWILIO_EDGE", "TWILIO_REGION")}
    env.update(TWILIO_ACCOUNT_SID=account.sid, TWILIO_AUTH_TOKEN=account.auth_token)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([str(python), "-c", SCRIPT, server, completed_sid], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("major", [8, 9])
def test_the_same_script_with_twilio_8_and_the_newest_9(server, account, completed_sid, tmp_path, major):
    if major == 8:
        result = run_script(sys.executable, account, server, completed_sid, tmp_path, str(ADDON_DIR))
    else:
        if not TWILIO9_PYTHON.exists():
            pytest.fail(f"{TWILIO9_PYTHON} is missing: run `make test`, which builds .venv-twilio9 "
                        "(the newest twilio 9.x and clients/python)")
        result = run_script(TWILIO9_PYTHON, account, server, completed_sid, tmp_path, None)
        installed = open(result["module"], "rb").read()
        assert installed == ADDON_SOURCE.read_bytes(), \
            f"{result['module']} is not the current {ADDON_SOURCE}: run `make test` to reinstall it"
    assert result["twilio"].split(".")[0] == str(major)

    created = result["created"]
    sid = created["sid"][1]
    assert SUMMARY_SID.fullmatch(sid)
    assert created["status"] == ["str", "queued"] and created["account_sid"] == ["str", account.sid]
    assert created["start_date"] == ["date", "2024-01-01"] and created["end_date"] == ["date", "2024-01-31"]
    assert created["include_subaccounts"] == ["bool", True] and created["date_created"][0] == "datetime"
    assert result["replayed_sid"] == sid
    assert result["fetched"] == created
    assert result["deleted"] is True
    assert result["after_delete"] == {
        "class": "twilio.base.exceptions.TwilioRestException", "status": 404, "code": 20404, "method": "GET",
        "uri": f"/Accounts/{account.sid}/Calls/FeedbackSummary/{sid}.json",
        "msg": result["after_delete"]["msg"],
    }
    assert result["after_delete"]["msg"].startswith("Unable to fetch record: ")
    bad_date = result["bad_date"]
    assert (bad_date["class"], bad_date["status"], bad_date["code"]) == \
        ("twilio.base.exceptions.TwilioRestException", 400, 20001) and "StartDate" in bad_date["msg"]
    # Field for field, type for type, what twilio 8.13.0's own resource reads.
    assert result["completed"] == json.loads(json.dumps(as_json(library(account, server)(completed_sid).fetch())))
