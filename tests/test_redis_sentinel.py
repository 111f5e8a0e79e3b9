"""Redis through Sentinel: a sentinel:// REDIS_URL for the broker, the project's own client (markers,
the callback breaker and slots, whose Lua script must survive a new master) and the rate limit; and,
with real processes, a master killed under traffic: every accepted summary still completes, from the
sweeper's re-sends where the failover lost messages, and no worker exits. Sentinels that ask for a
password of their own (requirepass) get REDIS_SENTINEL_PASSWORD, and only they do; without it every
client fails saying so."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import redis
from sqlalchemy import text

from api.errors import TooManyRequests
from api.ratelimit import RateLimit
from shared.platform import queue, redis_connect
from shared.platform.config import SettingError, Settings
from tests.support import reset_caches
from tests.processes import celery_beat, celery_worker, gunicorn, wait_for
from tests.redis_servers import MASTER, SentinelRedis
from tests.support import make_account, make_calls, summaries_path
from shared.callbacks.circuit import CircuitBreaker, Slots


def test_the_sentinel_url_and_what_kombu_is_given():
    target = redis_connect.parse_url("sentinel://:s%40cret@h1:26380,h2,[::1]:26381/3")
    assert target.sentinels == (("h1", 26380), ("h2", 26379), ("::1", 26381))
    assert (target.db, target.username, target.password, target.tls) == (3, None, "s@cret", False)
    assert redis_connect.parse_url("sentinels://h1").tls and not redis_connect.parse_url("redis://h/1").sentinels
    settings = Settings.from_env({"REDIS_URL": "sentinel://h1:26380,h2/3", "REDIS_SENTINEL_MASTER": "m"})
    url, use_ssl, options = redis_connect.kombu_broker(settings, settings.redis_url)
    assert url == "sentinel://h1:26380/3;sentinel://h2:26379/3" and use_ssl is None
    assert options["master_name"] == "m" and options["sentinel_kwargs"]["socket_timeout"] == settings.enqueue_timeout_s
    app = queue.make_celery(settings.redis_url, settings)
    assert app.conf.broker_transport == queue.SENTINEL_TRANSPORT
    assert app.conf.broker_transport_options["master_name"] == "m"


def test_the_sentinels_password_goes_to_the_sentinels_alone(tmp_path):
    secret = tmp_path / "sentinel-password"
    secret.write_text("s3ntinel\n")
    settings = Settings.from_env({"REDIS_URL": "sentinel://:redis-pw@h1/0", "REDIS_SENTINEL_MASTER": "m",
                                  "REDIS_SENTINEL_PASSWORD_FILE": str(secret)})
    assert settings.redis_sentinel_password == "s3ntinel" and "s3ntinel" not in repr(settings)
    target = redis_connect.parse_url(settings.redis_url)
    assert redis_connect.sentinel_options(settings, target)["password"] == "s3ntinel"
    assert redis_connect.connection_options(settings, target)["password"] == "redis-pw"  # Redis's, from the URL
    url, _, options = redis_connect.kombu_broker(settings, settings.redis_url)
    assert options["sentinel_kwargs"]["password"] == "s3ntinel" and "s3ntinel" not in url
    assert "password" not in redis_connect.sentinel_options(Settings.from_env({}), target)
    (tmp_path / "empty").write_text("\n")
    for env, message in [({"REDIS_SENTINEL_PASSWORD": "s3ntinel", "REDIS_SENTINEL_PASSWORD_FILE": str(secret)},
                          "REDIS_SENTINEL_PASSWORD and REDIS_SENTINEL_PASSWORD_FILE are both set"),
                         ({"REDIS_SENTINEL_PASSWORD_FILE": str(tmp_path / "absent")}, "cannot read"),
                         ({"REDIS_SENTINEL_PASSWORD_FILE": str(tmp_path / "empty")}, "is empty"),
                         # Beside Redis itself it would go unused: most likely meant as Redis's password.
                         ({"REDIS_URL": "redis://h/0", "REDIS_SENTINEL_PASSWORD": "s3ntinel"}, "names Redis itself")]:
        with pytest.raises(SettingError, match=message) as raised:
            Settings.from_env(env)
        assert "REDIS_SENTINEL_PASSWORD" in str(raised.value) and "s3ntinel" not in str(raised.value)


REDIS_PASSWORD, SENTINEL_PASSWORD = "redis-pw-7", "sentinel-pw-3"


@pytest.fixture(params=["open"])
def sentinel_env(request, service_urls, monkeypatch, tmp_path):
    """A master, replica and sentinels, and the variables that reach them set. Parametrized
    "passwords": Redis asks for its password (given in REDIS_URL) and the sentinels for another (given
    in REDIS_SENTINEL_PASSWORD_FILE, as a mounted secret)."""
    if request.param == "passwords":
        cluster = SentinelRedis(tmp_path, redis_password=REDIS_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
        secret = tmp_path / "sentinel-password"
        secret.write_text(f"{SENTINEL_PASSWORD}\n")
        monkeypatch.setenv("REDIS_SENTINEL_PASSWORD_FILE", str(secret))
    else:
        cluster = SentinelRedis(tmp_path)
    monkeypatch.setenv("REDIS_URL", cluster.url())
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", MASTER)
    reset_caches()
    yield cluster
    monkeypatch.undo()
    reset_caches()
    cluster.stop()


def sent(sid: str) -> bool:
    with queue.get_celery().connection_for_read() as connection:
        message = connection.default_channel.basic_get(queue.SUMMARIES_QUEUE, no_ack=True)
    return message is not None and message.decode()[0] == [sid]


@pytest.mark.slow
@pytest.mark.parametrize("sentinel_env", ["open", "passwords"], indirect=True)
def test_every_client_reaches_the_master_and_follows_it_through_a_failover(sentinel_env):
    cluster = sentinel_env
    settings = Settings.from_env({**os.environ, "CREATE_RATE_LIMIT": "3/minute"})
    limit = RateLimit(settings.redis_url, settings)
    breaker = CircuitBreaker(queue.get_redis(), threshold=1, cooldown_s=60, probe_lease_s=5)
    slots = Slots(queue.get_redis(), lease_s=30)

    def all_work(round_: int) -> None:
        assert queue.enqueue_summary(f"SM{round_}") and sent(f"SM{round_}")
        assert queue.get_redis().exists(queue.IN_FLIGHT_KEY.format(sid=f"SM{round_}"))
        assert slots.acquire(f"t{round_}", {f"host{round_}": 1}) is None
        assert slots.acquire(f"u{round_}", {f"host{round_}": 1}) == f"host{round_}"  # the Lua script, on this master
        assert breaker.record_failure(f"k{round_}") and breaker.wait_s(f"k{round_}") > 0
        limit.check(f"AC{round_}")
        limit.check(f"AC{round_}")
        limit.check(f"AC{round_}")
        with pytest.raises(TooManyRequests):
            limit.check(f"AC{round_}")

    first = cluster.master_name()
    all_work(1)
    cluster.kill_master()
    wait_for(lambda: cluster.master_name() != first, 20, 0.2, "the sentinels to promote the replica")
    # The same clients, never rebuilt: each asks the sentinels again on its next connection.
    wait_for(lambda: _answers(queue.get_redis()), 10, 0.2, "the client to reach the new master")
    all_work(2)


@pytest.mark.slow
@pytest.mark.parametrize("sentinel_env", ["passwords"], indirect=True)
def test_without_the_sentinels_password_every_client_fails_saying_so(sentinel_env, monkeypatch):
    refused = "No master found for 'cfs-test' : .* auth:AuthenticationError"  # per sentinel asked
    # One sentinel named: redis-py retries a refused AUTH with backoff, about 4 s for each sentinel.
    monkeypatch.setenv("REDIS_URL", sentinel_env.url(sentinels=1))
    monkeypatch.delenv("REDIS_SENTINEL_PASSWORD_FILE")
    reset_caches()
    with pytest.raises(redis.sentinel.MasterNotFoundError, match=refused):
        queue.get_redis().ping()
    with pytest.raises(Exception, match=refused):  # the broker: what a worker logs as it retries
        with queue.get_celery().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    assert not queue.enqueue_summary("SMnoauth")
    limit = RateLimit(os.environ["REDIS_URL"], Settings.from_env(os.environ))
    with pytest.raises(redis.sentinel.MasterNotFoundError, match=refused):  # check() fails open on this
        limit.limiter.hit(limit.items[0], "create", "ACnoauth")
    # A wrong one (Redis's own, say) is refused alike, and not echoed.
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", REDIS_PASSWORD)
    reset_caches()
    with pytest.raises(redis.sentinel.MasterNotFoundError, match=refused) as raised:
        queue.get_redis().ping()
    assert REDIS_PASSWORD not in str(raised.value)


def _answers(client) -> bool:
    try:
        return client.set("cfs:test:probe", 1)
    except Exception:
        return False


def _post(base_url: str, account, form: dict) -> tuple[int, str | None]:
    request = urllib.request.Request(f"{base_url}{summaries_path(account.sid)}", urllib.parse.urlencode(form).encode(),
                                     {"Authorization": "Basic " + base64.b64encode(
                                         f"{account.sid}:{account.auth_token}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())["sid"]
    except urllib.error.HTTPError as error:
        return error.code, None
    except OSError:
        return 0, None


@pytest.mark.slow
@pytest.mark.parametrize("sentinel_env", ["passwords"], indirect=True)
def test_a_master_killed_under_traffic_loses_no_accepted_summary_and_no_worker(engine, sentinel_env, tmp_path):
    # Every process (gunicorn's gevent workers, Celery's prefork worker and beat) authenticates to
    # Redis and, with REDIS_SENTINEL_PASSWORD_FILE from this environment, to the sentinels.
    cluster = sentinel_env
    env = {"REDIS_URL": cluster.url(), "REDIS_SENTINEL_MASTER": MASTER, "ENQUEUE_TIMEOUT_S": "1",
           "REDIS_SENTINEL_PASSWORD_FILE": os.environ["REDIS_SENTINEL_PASSWORD_FILE"]}
    account = make_account(engine)
    make_calls(engine, account, [dt.datetime(2024, 1, d, tzinfo=dt.timezone.utc) for d in range(1, 6)])
    web, base_url = gunicorn(tmp_path, env=env)
    worker = celery_worker(tmp_path, "sentinel-w", queues="summaries", concurrency=2, env=env)
    beat = celery_beat(tmp_path, env)
    accepted, refused, stop = [], [], threading.Event()

    def create() -> None:
        form = {"StartDate": "2024-01-01", "EndDate": "2024-01-31"}
        while not stop.is_set():
            status, sid = _post(base_url, account, form)
            (accepted if 200 <= status < 300 else refused).append(sid or status)
            time.sleep(0.05)

    creator = threading.Thread(target=create, daemon=True)
    try:
        wait_for(lambda: "ready." in worker.output(), 30, 0.2, "the worker to be ready")
        creator.start()
        time.sleep(3)
        first, killed_at = cluster.kill_master()
        wait_for(lambda: cluster.master_name() != first, 20, 0.2, "the sentinels to promote the replica")
        failover_s = time.monotonic() - killed_at
        time.sleep(4)  # creates go on against the new master
        stop.set()
        creator.join(15)

        def statuses() -> dict[str, str]:
            with engine.connect() as connection:
                return dict(connection.execute(text("SELECT sid, status FROM feedback_summaries")).all())

        wait_for(lambda: set(statuses().values()) == {"completed"}, 30, 0.5, "every accepted summary to complete")
        assert worker.popen.poll() is None and beat.popen.poll() is None, worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output()
    finally:
        stop.set()
        for process in (worker, beat, web):
            process.stop()
    assert accepted and set(accepted) == set(statuses()), (len(accepted), refused)
    assert not refused, refused  # the API accepts while Redis fails over: the row is the promise
    print(f"failover {failover_s:.1f}s; {len(accepted)} accepted")
