"""Summary create, fetch and delete through the WSGI app, on real PostgreSQL and Redis."""

import email.utils

import pytest

from tests.support import FORM, make_account, post_summary, queued_messages, snapshot, summaries_path

SUMMARY_FIELDS = {
    "account_sid", "call_count", "call_feedback_count", "date_created", "date_updated", "end_date",
    "include_subaccounts", "issues", "quality_score_average", "quality_score_median",
    "quality_score_standard_deviation", "sid", "start_date", "status",
}



def test_create_answers_201_with_exactly_the_schema_fields_and_queued(client, account):
    response = post_summary(client, account, {**FORM, "IncludeSubaccounts": "true"})
    assert response.status == 201
    body = response.json
    assert set(body) == SUMMARY_FIELDS
    assert body["sid"].startswith("FS") and len(body["sid"]) == 34
    assert body["status"] == "queued"
    assert (body["start_date"], body["end_date"], body["include_subaccounts"]) == ("2024-01-01", "2024-01-31", True)
    assert all(body[name] is None for name in ("call_count", "call_feedback_count", "issues",
                                                "quality_score_average", "quality_score_median",
                                                "quality_score_standard_deviation"))
    assert body["date_created"].endswith(" +0000")
    assert email.utils.parsedate_to_datetime(body["date_created"]).tzinfo is not None
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Twilio-Request-Id"].startswith("RQ")


def test_create_enqueues_one_compute_message_carrying_only_the_sid(client, account, redis_client):
    sid = post_summary(client, account).json["sid"]
    assert queued_messages(redis_client) == [{"task": "summaries.compute", "args": [sid]}]
    assert redis_client.exists(f"cfs:inflight:{sid}")


@pytest.mark.parametrize("raw, expected", [("True", True), ("false", False), ("FALSE", False), ("", False)])
def test_include_subaccounts_accepts_any_case(client, account, raw, expected):
    assert post_summary(client, account, {**FORM, "IncludeSubaccounts": raw}).json["include_subaccounts"] is expected


@pytest.mark.parametrize("raw, expected", [("", "POST"), (" \t", "POST"), ("get", "GET"), (" Post\t", "POST")])
def test_a_blank_callback_method_means_post_and_either_case_is_taken(client, account, engine, raw, expected):
    from sqlalchemy import text

    sid = post_summary(client, account, {**FORM, "StatusCallback": " https://example.com/cb ",
                                         "StatusCallbackMethod": raw}).json["sid"]
    with engine.connect() as connection:
        row = connection.execute(text("SELECT status_callback, status_callback_method FROM feedback_summaries "
                                      "WHERE sid = :sid"), {"sid": sid}).one()
    assert tuple(row) == ("https://example.com/cb", expected)


def test_callback_settings_are_stored(client, account, engine):
    from sqlalchemy import text

    sid = post_summary(client, account, {**FORM, "StatusCallback": "https://example.com/cb?x=1",
                                   "StatusCallbackMethod": "get"}).json["sid"]
    with engine.connect() as connection:
        row = connection.execute(text("SELECT status_callback, status_callback_method FROM feedback_summaries "
                                      "WHERE sid = :sid"), {"sid": sid}).one()
    assert tuple(row) == ("https://example.com/cb?x=1", "GET")


def test_fetch_returns_what_create_returned(client, account):
    created = post_summary(client, account).json
    fetched = client.get(summaries_path(account.sid, created["sid"]), auth=(account.sid, account.auth_token))
    assert fetched.status == 200
    assert fetched.json == created


def test_delete_answers_204_without_body_and_the_summary_is_gone(client, account):
    sid = post_summary(client, account).json["sid"]
    auth = (account.sid, account.auth_token)
    deleted = client.delete(summaries_path(account.sid, sid), auth=auth)
    assert (deleted.status, deleted.body) == (204, b"")
    assert "Content-Type" not in deleted.headers
    assert client.get(summaries_path(account.sid, sid), auth=auth).status == 404
    assert client.delete(summaries_path(account.sid, sid), auth=auth).status == 404


def test_idempotency_key_replays_the_original_summary(client, account, redis_client):
    first = post_summary(client, account, headers={"Idempotency-Key": "order-42"})
    again = post_summary(client, account, headers={"Idempotency-Key": "order-42"})
    assert (first.status, again.status) == (201, 201)
    assert again.json == first.json
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(queued_messages(redis_client)) == 1


def test_idempotency_key_is_per_account(client, account, engine):
    other = make_account(engine)
    first = post_summary(client, account, headers={"Idempotency-Key": "same"})
    second = post_summary(client, other, headers={"Idempotency-Key": "same"})
    assert first.json["sid"] != second.json["sid"]


def test_idempotency_key_reused_with_other_parameters_is_refused_and_writes_nothing(client, account, engine,
                                                                                     redis_client):
    post_summary(client, account, headers={"Idempotency-Key": "k1"})
    before = snapshot(engine, redis_client)
    response = post_summary(client, account, {**FORM, "EndDate": "2024-02-01"}, headers={"Idempotency-Key": "k1"})
    assert (response.status, response.json["code"]) == (400, 20001)
    assert "Idempotency-Key" in response.json["message"]
    assert snapshot(engine, redis_client) == before


def test_idempotency_key_expires_after_the_window(client, account, engine):
    from sqlalchemy import text

    first = post_summary(client, account, headers={"Idempotency-Key": "old"}).json["sid"]
    with engine.begin() as connection:
        connection.execute(text("UPDATE idempotency_keys SET date_created = now() - interval '25 hours'"))
    second = post_summary(client, account, headers={"Idempotency-Key": "old"}).json["sid"]
    assert second != first


def test_deleting_the_summary_frees_its_idempotency_key(client, account):
    first = post_summary(client, account, headers={"Idempotency-Key": "del"}).json["sid"]
    client.delete(summaries_path(account.sid, first), auth=(account.sid, account.auth_token))
    assert post_summary(client, account, headers={"Idempotency-Key": "del"}).json["sid"] != first


def test_create_survives_redis_being_down_and_keeps_the_summary_queued(engine, redis_client, settings_env):
    """The row is committed before the enqueue; a failed enqueue leaves it for the sweeper, never lost."""
    from api.factory import create_app
    from tests.support import WsgiClient

    settings_env(REDIS_URL="redis://127.0.0.1:1/0", ENQUEUE_TIMEOUT_S="0.5")
    account = make_account(engine)
    response = post_summary(WsgiClient(create_app()), account)
    assert response.status == 201
    assert response.json["status"] == "queued"
    with engine.connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("SELECT status FROM feedback_summaries")).scalar() == "queued"
