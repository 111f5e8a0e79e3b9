"""Redis down: the API keeps accepting summaries without waiting for Redis on every request, and
sends again once Redis is back. A real redis-server of the test's own, killed and started again;
the latch's rules on a clock of the test's."""

from __future__ import annotations

import time

import pytest
import redis

from shared.platform import queue
from shared.platform.redis_outage import OutageLatch, RedisDown
from tests.support import WsgiClient, make_account, summaries_path
from tests.test_redis_restart import PrivateRedis


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _refused():
    raise redis.exceptions.ConnectionError("Connection refused")


def test_after_a_failure_calls_are_skipped_for_the_pause_then_one_probe_ends_the_outage():
    clock = Clock()
    latch = OutageLatch(5, 2, clock)
    assert latch.call(lambda: "ok") == "ok" and not latch.down
    with pytest.raises(redis.exceptions.ConnectionError):
        latch.call(_refused)
    assert not latch.down  # one failure is a blip, not an outage
    assert latch.call(lambda: "ok") == "ok"
    for _ in range(2):
        with pytest.raises(redis.exceptions.ConnectionError):
            latch.call(_refused)
    assert latch.down
    calls = []
    with pytest.raises(RedisDown):
        latch.call(calls.append, "skipped")
    clock.now += 4.9
    with pytest.raises(RedisDown):
        latch.call(calls.append, "skipped")
    assert calls == []
    clock.now += 0.2
    with pytest.raises(redis.exceptions.TimeoutError):  # the probe fails: another pause
        latch.call(lambda: (_ for _ in ()).throw(redis.exceptions.TimeoutError("timed out")))
    with pytest.raises(RedisDown):
        latch.call(calls.append, "skipped")
    clock.now += 5.1

    def probe():
        # While one call tries Redis again, the others still skip it.
        with pytest.raises(RedisDown):
            latch.call(calls.append, "skipped")
        return "answered"

    assert latch.call(probe) == "answered" and not latch.down
    assert latch.call(calls.append, "sent") is None and calls == ["sent"]


def test_an_error_that_is_not_an_outage_opens_nothing():
    latch = OutageLatch(5, 1, Clock())
    with pytest.raises(redis.exceptions.ResponseError):
        latch.call(lambda: (_ for _ in ()).throw(redis.exceptions.ResponseError("NOSCRIPT")))
    assert not latch.down and latch.call(lambda: 1) == 1


class Killed(BaseException):
    """As a greenlet killed, or a caller's own timeout, in the middle of a call."""


def test_a_probe_cut_short_neither_ends_the_outage_nor_stops_the_next_probe():
    clock = Clock()
    latch = OutageLatch(5, 1, clock)
    with pytest.raises(redis.exceptions.ConnectionError):
        latch.call(_refused)
    clock.now += 6

    def killed():
        raise Killed()

    with pytest.raises(Killed):
        latch.call(killed)
    assert latch.down  # nothing was heard from Redis
    assert latch.call(lambda: "answered") == "answered" and not latch.down


@pytest.mark.slow
def test_creates_do_not_wait_for_a_dead_redis_and_are_sent_once_it_is_back(engine, redis_client, tmp_path,
                                                                          settings_env):
    from api.factory import create_app

    private = PrivateRedis(tmp_path)
    private.start()
    settings_env(REDIS_URL=private.url, ENQUEUE_TIMEOUT_S="1")
    try:
        client = WsgiClient(create_app())
        account = make_account(engine)
        path, auth = summaries_path(account.sid), (account.sid, account.auth_token)
        form = {"StartDate": "2024-01-01", "EndDate": "2024-01-31"}
        assert client.post(path, form=form, auth=auth).status == 201
        private.stop()  # SIGKILL
        timings, sids = [], []
        for _ in range(20):
            began = time.monotonic()
            response = client.post(path, form=form, auth=auth)
            timings.append(time.monotonic() - began)
            assert response.status == 201 and response.json["status"] == "queued"
            sids.append(response.json["sid"])
        # The first pays the timeout (the rate limit's or the message's), the others do not wait.
        assert max(timings[1:]) < 0.5, timings
        assert sum(timings) < 4, timings  # before: 2 s each (the limit, then the message)
        private.start()  # empty, on the same port
        time.sleep(5.2)  # the latch's pause
        after = client.post(path, form=form, auth=auth).json["sid"]
        back = redis.Redis.from_url(private.url)
        assert back.exists(queue.IN_FLIGHT_KEY.format(sid=after)) == 1 and back.llen("summaries") == 1
        # The ones created meanwhile have no message: the sweeper's to send (tests/test_recovery.py).
        assert not any(back.exists(queue.IN_FLIGHT_KEY.format(sid=sid)) for sid in sids)
    finally:
        private.stop()
