"""Pure logic without services: router, body reading, form parsing, formats, settings, and the
in-flight markers on fakeredis (only Redis logic is under test there)."""

from __future__ import annotations

import datetime as dt
import io
import time
from decimal import Decimal

import fakeredis
import pytest

from api.errors import BadRequest, MethodNotAllowed, NotFound, PayloadTooLarge
from api.http import parse_form, read_body
from api.routing import Router
from shared.accounts.sids import ACCOUNT, CALL, SUMMARY, is_sid, new_auth_token, new_sid
from shared.formats import parse_bool, percentage, rfc2822, round4
from shared.platform import queue
from shared.platform import queue as queue_module
from shared.platform.config import SettingError, Settings, get_settings


def test_router_tells_404_from_405_and_lists_allowed_methods():
    router = Router()
    fetch, delete = object(), object()
    router.add("/A/{Sid}.json", GET=fetch, DELETE=delete)
    route, handler, params = router.match("GET", "/A/FS1.json")
    assert handler is fetch and params == {"Sid": "FS1"}
    with pytest.raises(MethodNotAllowed) as raised:
        router.match("POST", "/A/FS1.json")
    assert dict(raised.value.headers) == {"Allow": "DELETE, GET, HEAD"}
    for path in ("/A/FS1.jsonx", "/A/x/y.json", "/A/.json", "/a/FS1.json"):
        with pytest.raises(NotFound):
            router.match("GET", path)


def test_read_body_honours_the_cap_declared_or_chunked():
    assert read_body({"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abcdef")}, 10) == b"abc"
    assert read_body({"CONTENT_LENGTH": "", "wsgi.input": io.BytesIO(b"abc")}, 10) == b""
    with pytest.raises(PayloadTooLarge):
        read_body({"CONTENT_LENGTH": "11", "wsgi.input": None}, 10)
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    assert read_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 10)}, 10) == b"x" * 10
    with pytest.raises(PayloadTooLarge):
        read_body({**chunked, "wsgi.input": io.BytesIO(b"x" * 11)}, 10)
    for bad in ("-1", "1e3", "abc"):
        with pytest.raises(BadRequest):
            read_body({"CONTENT_LENGTH": bad, "wsgi.input": io.BytesIO()}, 10)


def test_parse_form_keeps_repeats_and_blanks_and_refuses_bad_bytes_or_too_many_fields():
    assert parse_form(b"Issue=a&Issue=b&Empty=&Name=%C3%A9", 10) == {"Issue": ["a", "b"], "Empty": [""],
                                                                      "Name": ["\u00e9"]}
    with pytest.raises(BadRequest, match="UTF-8"):
        parse_form(b"Name=%E9", 10)
    with pytest.raises(BadRequest, match="more than 2"):
        parse_form(b"a=1&b=2&c=3", 2)


@pytest.mark.parametrize("value, expected", [
    (Decimal("3.14145"), Decimal("3.1414")), (Decimal("3.14155"), Decimal("3.1416")), (Decimal("2"), Decimal("2.0000")),
])
def test_round4_is_half_even(value, expected):
    assert round4(value) == expected


@pytest.mark.parametrize("count, total, expected", [
    (1, 225, "0.44%"), (1, 8, "12.50%"), (1, 800, "0.12%"), (3, 800, "0.38%"), (5, 5, "100.00%"), (0, 0, "0.00%"),
    (1, 0, "0.00%"),
])
def test_percentage_is_half_even_with_two_places(count, total, expected):
    assert percentage(count, total) == expected


def test_rfc2822_is_utc_without_microseconds():
    moment = dt.datetime(2010, 8, 31, 22, 36, 28, 999, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert rfc2822(moment) == "Tue, 31 Aug 2010 20:36:28 +0000"


def test_parse_bool_accepts_any_case_only():
    assert (parse_bool("True"), parse_bool(" false "), parse_bool("yes"), parse_bool("1")) == (True, False, None, None)


def test_sids_have_a_prefix_and_32_lowercase_hex_digits():
    for prefix in (ACCOUNT, CALL, SUMMARY):
        sid = new_sid(prefix)
        assert is_sid(sid, prefix) and len(sid) == 34
    assert not is_sid("AC" + "A" * 32, ACCOUNT) and not is_sid("CA" + "0" * 32, ACCOUNT)
    assert len(new_auth_token()) == 32


def test_settings_are_typed_and_refuse_bad_values():
    settings = Settings.from_env({"SUMMARY_LEASE_S": "60", "DATABASE_URL": " "})
    assert settings.summary_lease_s == 60 and settings.database_url is None and settings.sweep_interval_s == 30
    with pytest.raises(SettingError, match="SUMMARY_LEASE_S"):
        Settings.from_env({"SUMMARY_LEASE_S": "five"})


def test_without_message_lists_the_summaries_whose_marker_is_gone():
    redis = fakeredis.FakeRedis()
    redis.set(queue.IN_FLIGHT_KEY.format(sid="FS1"), 1)
    assert queue.without_message(redis, ["FS1", "FS2"]) == ["FS2"]
    assert queue.without_message(redis, []) == []
    redis.flushall()  # what a Redis restarted empty looks like
    assert queue.without_message(redis, ["FS1", "FS2"]) == ["FS1", "FS2"]


def test_enqueue_sets_an_expiring_marker_and_reports_failure_instead_of_raising(monkeypatch):
    redis = fakeredis.FakeRedis()
    sent = []

    class Broker:
        def send_task(self, name, args, queue, countdown, retry, headers):
            sent.append((name, args, queue, retry))
            assert abs(headers[queue_module.SENT_AT_HEADER] - time.time()) < 5

    monkeypatch.setattr(queue, "get_redis", lambda: redis)
    monkeypatch.setattr(queue, "get_celery", lambda: Broker())
    assert queue.enqueue_summary("FS1") is True
    assert sent == [(queue.COMPUTE_SUMMARY, ["FS1"], queue.SUMMARIES_QUEUE, False)]
    assert 0 < redis.ttl(queue.IN_FLIGHT_KEY.format(sid="FS1")) <= queue.marker_ttl_s(get_settings())
    queue.clear_in_flight("FS1")
    assert not redis.exists(queue.IN_FLIGHT_KEY.format(sid="FS1"))

    class DownBroker:
        def send_task(self, *args, **kwargs):
            raise ConnectionError("Redis is down")

    monkeypatch.setattr(queue, "get_celery", lambda: DownBroker())
    assert queue.enqueue_summary("FS2") is False
    assert not redis.exists(queue.IN_FLIGHT_KEY.format(sid="FS2"))


def test_queue_depth_reads_the_oldest_message_age_from_its_header():
    import json

    redis = fakeredis.FakeRedis()
    assert queue.queue_depth(redis, "summaries") == (0, None)
    for age_s in (30, 5):  # kombu pushes on the left: the oldest ends up on the right
        redis.lpush("summaries", json.dumps({"headers": {queue.SENT_AT_HEADER: time.time() - age_s}}))
    depth, oldest_s = queue.queue_depth(redis, "summaries")
    assert depth == 2 and 29 < oldest_s < 32
    redis.rpush("summaries", json.dumps({"headers": {}}))  # a message from elsewhere, without the header
    assert queue.queue_depth(redis, "summaries") == (3, None)


def test_summaries_up_restarts_a_dead_child_at_once_then_with_a_doubling_pause():
    from cli.up import RESTART_MAX_S, Restarts

    now = [1000.0]
    restarts = Restarts(clock=lambda: now[0])
    assert restarts.due("worker")  # first death: at once
    waits = []
    for _ in range(7):  # keeps dying right after each start
        now[0] += 0.5
        began = now[0]
        while not restarts.due("worker"):
            now[0] += 0.25
        waits.append(now[0] - began)
    assert waits[:5] == [1.0, 2.0, 4.0, 8.0, 16.0] and waits[-1] == RESTART_MAX_S
    now[0] += 120  # ran fine for two minutes, then died: at once again
    assert restarts.due("worker") and restarts.due("web")
