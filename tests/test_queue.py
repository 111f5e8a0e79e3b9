"""The queue's own bookkeeping in Redis (fakeredis): in-flight markers, what a failed send reports,
a queue's depth and age."""

from __future__ import annotations

import time

import fakeredis

from shared.platform import queue
from shared.platform import queue as queue_module
from shared.platform.config import get_settings


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
