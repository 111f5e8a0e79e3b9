"""The official twilio library (8.13.0) drives the API, unchanged, over a real loopback socket to
gunicorn: create, fetch and delete a summary; post and fetch call feedback; errors as exceptions."""

from __future__ import annotations

import datetime as dt

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from tests.support import make_account, make_calls, queued_messages

pytestmark = pytest.mark.slow  # gunicorn, as a process



def twilio_client(account, base_url: str) -> Client:
    client = Client(account.sid, account.auth_token)
    client.api.base_url = base_url  # the only change: where the library sends its requests
    return client


def test_library_version_is_the_one_the_spec_names():
    import twilio

    assert twilio.__version__ == "8.13.0"


def test_create_fetch_delete_a_summary(server, account, redis_client):
    client = twilio_client(account, server)
    created = client.calls.feedback_summaries.create(
        start_date=dt.date(2024, 1, 1), end_date=dt.date(2024, 1, 31), include_subaccounts=True,
        status_callback="https://example.com/done", status_callback_method="GET",
    )
    assert created.sid.startswith("FS") and created.account_sid == account.sid
    assert created.status == "queued"
    assert (created.start_date, created.end_date) == (dt.date(2024, 1, 1), dt.date(2024, 1, 31))
    assert created.include_subaccounts is True
    assert isinstance(created.date_created, dt.datetime)
    assert queued_messages(redis_client) == [{"task": "summaries.compute", "args": [created.sid]}]

    fetched = client.calls.feedback_summaries(created.sid).fetch()
    assert (fetched.sid, fetched.status, fetched.call_count) == (created.sid, "queued", None)

    assert client.calls.feedback_summaries(created.sid).delete() is True
    with pytest.raises(TwilioRestException) as raised:
        client.calls.feedback_summaries(created.sid).fetch()
    assert (raised.value.status, raised.value.code) == (404, 20404)


def test_post_and_fetch_call_feedback(server, account, engine):
    call_sid = make_calls(engine, account, [dt.datetime(2024, 1, 2)])[0]
    client = twilio_client(account, server)
    posted = client.calls(call_sid).feedback().update(quality_score=2, issue=["dropped-call", "imperfect-audio"])
    assert (posted.quality_score, posted.issues) == (2, ["dropped-call", "imperfect-audio"])
    fetched = client.calls(call_sid).feedback().fetch()
    assert (fetched.quality_score, fetched.issues, fetched.sid) == (2, ["dropped-call", "imperfect-audio"], call_sid)
    replaced = client.calls(call_sid).feedback().update(quality_score=5)
    assert (replaced.quality_score, replaced.issues) == (5, [])
    assert replaced.date_created == posted.date_created


def test_errors_reach_the_library_as_twilio_exceptions(server, account):
    client = twilio_client(account, server)
    with pytest.raises(TwilioRestException) as raised:
        client.calls.feedback_summaries.create(start_date=dt.date(2024, 2, 1), end_date=dt.date(2024, 1, 1))
    assert (raised.value.status, raised.value.code) == (400, 20001)
    assert "EndDate" in raised.value.msg

    wrong = Client(account.sid, "0" * 32)
    wrong.api.base_url = server
    with pytest.raises(TwilioRestException) as raised:
        wrong.calls.feedback_summaries("FS" + "0" * 32).fetch()
    assert (raised.value.status, raised.value.code) == (401, 20003)


def test_a_parent_uses_its_subaccount_through_the_library(server, account, engine):
    child = make_account(engine, account)
    parent = Client(account.sid, account.auth_token, account_sid=child.sid)
    parent.api.base_url = server
    created = parent.calls.feedback_summaries.create(start_date=dt.date(2024, 1, 1), end_date=dt.date(2024, 1, 1))
    assert created.account_sid == child.sid
