"""Call feedback through the WSGI app: post creates or replaces the one entry of a call, fetch reads it."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest
from sqlalchemy import text

from tests.support import add_feedback, feedback_path, make_calls, snapshot
from tests.test_api_errors import assert_error

FEEDBACK_FIELDS = {"account_sid", "date_created", "date_updated", "issues", "quality_score", "sid"}



@pytest.fixture
def call_sid(engine, account):
    return make_calls(engine, account, [dt.datetime(2024, 1, 2, 12)])[0]


def post(client, account, call_sid, form):
    return client.post(feedback_path(account.sid, call_sid), form=form, auth=(account.sid, account.auth_token))


def test_post_creates_the_entry_and_fetch_returns_it(client, account, call_sid):
    created = post(client, account, call_sid, {"QualityScore": "2", "Issue": ["dropped-call", "one-way-audio"]})
    assert created.status == 200
    assert set(created.json) == FEEDBACK_FIELDS
    assert created.json["sid"] == call_sid and created.json["account_sid"] == account.sid
    assert (created.json["quality_score"], created.json["issues"]) == (2, ["dropped-call", "one-way-audio"])
    fetched = client.get(feedback_path(account.sid, call_sid), auth=(account.sid, account.auth_token))
    assert fetched.status == 200 and fetched.json == created.json


def test_posting_again_replaces_the_entry_and_moves_date_updated_only(client, account, call_sid, engine):
    given_at = dt.datetime(2024, 1, 2, 13, tzinfo=dt.timezone.utc)
    add_feedback(engine, call_sid, account, 1, ["dropped-call"], given_at)
    replaced = post(client, account, call_sid, {"QualityScore": "4"}).json
    assert (replaced["quality_score"], replaced["issues"]) == (4, [])
    assert email.utils.parsedate_to_datetime(replaced["date_created"]) == given_at
    assert email.utils.parsedate_to_datetime(replaced["date_updated"]) > given_at
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM call_feedback")).scalar() == 1


def test_a_repeated_issue_is_kept_once(client, account, call_sid):
    body = post(client, account, call_sid, {"QualityScore": "3", "Issue": ["post-dial-delay"] * 3}).json
    assert body["issues"] == ["post-dial-delay"]


@pytest.mark.parametrize("form, parameter", [
    ({}, "QualityScore"),
    ({"QualityScore": ""}, "QualityScore"),
    ({"QualityScore": "0"}, "QualityScore"),
    ({"QualityScore": "6"}, "QualityScore"),
    ({"QualityScore": "2.5"}, "QualityScore"),
    ({"QualityScore": "five"}, "QualityScore"),
    ({"QualityScore": "-1"}, "QualityScore"),
    ({"QualityScore": ["4", "5"]}, "QualityScore"),
    ({"QualityScore": "4", "Issue": "static"}, "Issue"),
    ({"QualityScore": "4", "Issue": ["dropped-call", "Dropped-Call"]}, "Issue"),
    ({"QualityScore": "4", "Issue": ""}, "Issue"),
])
def test_bad_feedback_is_400_naming_the_parameter_and_leaves_the_entry_as_it_was(client, account, call_sid, engine,
                                                                                 redis_client, form, parameter):
    add_feedback(engine, call_sid, account, 5, [], dt.datetime(2024, 1, 2, 13, tzinfo=dt.timezone.utc))
    before = snapshot(engine, redis_client)
    assert_error(post(client, account, call_sid, form), 400, 20001, parameter)
    assert snapshot(engine, redis_client) == before


def test_bad_feedback_for_a_call_without_feedback_creates_nothing(client, account, call_sid, engine, redis_client):
    before = snapshot(engine, redis_client)
    assert_error(post(client, account, call_sid, {"QualityScore": "9"}), 400, 20001, "QualityScore")
    assert snapshot(engine, redis_client) == before
    assert_error(client.get(feedback_path(account.sid, call_sid), auth=(account.sid, account.auth_token)), 404, 20404)
