"""rediss:// verifies Redis's certificate for every Redis client of the project: the project's own
(in-flight markers, callback guards), Celery's publish through kombu, and the create rate limit.
Against a Redis of the test's own that speaks only TLS, with a certificate of the test's own CA."""

from __future__ import annotations

import logging
import os

import pytest
import redis

from api.errors import TooManyRequests
from api.ratelimit import RateLimit
from shared.platform import queue
from shared.platform.config import SettingError, Settings, get_settings
from tests.support import reset_caches
from tests.redis_servers import MASTER, TlsRedis


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = TlsRedis(tmp_path_factory.mktemp("redis-tls"))
    yield server
    server.stop()


@pytest.fixture
def use_env(service_urls, monkeypatch):
    """Set variables and read the settings (and every client built from them) afresh."""

    def use(**variables: str) -> None:
        for name in ("REDIS_TLS_CA_FILE", "REDIS_TLS_CERT_FILE", "REDIS_TLS_KEY_FILE", "REDIS_TLS_VERIFY",
                     "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD_FILE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        reset_caches()

    yield use
    monkeypatch.undo()
    reset_caches()


def published(sid: str) -> None:
    """The compute message for `sid` read back off the queue through kombu (TLS too), and taken."""
    with queue.get_celery().connection_for_read() as connection:
        message = connection.default_channel.basic_get(queue.SUMMARIES_QUEUE, no_ack=True)
    assert message is not None and message.headers["task"] == queue.COMPUTE_SUMMARY
    assert message.decode()[0] == [sid]


def every_client_works(url: str) -> None:
    assert queue.get_redis().ping()
    assert queue.enqueue_summary("SMtls1")  # kombu's publish, then the in-flight marker through redis-py
    assert queue.get_redis().exists(queue.IN_FLIGHT_KEY.format(sid="SMtls1"))
    published("SMtls1")
    limit = RateLimit(url, Settings.from_env({**os.environ, "CREATE_RATE_LIMIT": "2/minute"}))
    limit.check("ACtls")
    limit.check("ACtls")
    with pytest.raises(TooManyRequests):  # counted in the TLS Redis: the limit fails open when Redis is unreachable
        limit.check("ACtls")


def test_with_the_ca_file_every_client_connects_with_the_certificate_verified(tls_redis, use_env):
    use_env(REDIS_URL=tls_redis.url(), REDIS_TLS_CA_FILE=str(tls_redis.certs["ca"]))
    queue.get_redis().flushdb()
    every_client_works(tls_redis.url())


def test_without_the_ca_file_no_client_connects_certificate_unverified(tls_redis, use_env):
    use_env(REDIS_URL=tls_redis.url())  # the system's trust store does not know the test's CA
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        queue.get_redis().ping()
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        with queue.get_celery().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
    assert not queue.enqueue_summary("SMtls2")
    limit = RateLimit(tls_redis.url(), get_settings())
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        limit.limiter.hit(limit.items[0], "create", "ACtls")


def test_the_host_name_is_checked_too(tls_redis, use_env):
    use_env(REDIS_URL=tls_redis.url("127.0.0.2"), REDIS_TLS_CA_FILE=str(tls_redis.certs["ca"]))
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED|match"):
        queue.get_redis().ping()


def test_verify_off_connects_without_checking_and_says_so(tls_redis, use_env, caplog, monkeypatch):
    from shared.platform import redis_connect

    monkeypatch.setattr(redis_connect, "_warned", False)
    use_env(REDIS_URL=tls_redis.url(), REDIS_TLS_VERIFY="false")
    queue.get_redis().flushdb()
    with caplog.at_level(logging.WARNING, logger="shared.platform.redis_connect"):
        every_client_works(tls_redis.url())
    assert "REDIS_TLS_VERIFY=false" in caplog.text


def test_sentinels_over_tls_name_the_master_and_every_client_reaches_it(tls_redis, use_env):
    port = tls_redis.start_sentinel()
    url = f"sentinels://localhost:{port}/0"
    use_env(REDIS_URL=url, REDIS_TLS_CA_FILE=str(tls_redis.certs["ca"]), REDIS_SENTINEL_MASTER=MASTER)
    queue.get_redis().flushdb()
    every_client_works(url)


def test_bad_tls_and_sentinel_settings_name_their_variable(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("")
    for env, name in [({"REDIS_TLS_CA_FILE": str(tmp_path / "absent.crt")}, "REDIS_TLS_CA_FILE"),
                      ({"REDIS_TLS_VERIFY": "maybe"}, "REDIS_TLS_VERIFY"),
                      ({"REDIS_TLS_KEY_FILE": str(ca)}, "REDIS_TLS_KEY_FILE"),
                      ({"REDIS_URL": "sentinel://h1:26379,h2:26379/0"}, "REDIS_SENTINEL_MASTER"),
                      ({"REDIS_URL": "sentinel://h1:x/0", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_URL"),
                      ({"REDIS_URL": "sentinel://h1,h2/zero", "REDIS_SENTINEL_MASTER": "m"}, "REDIS_URL")]:
        with pytest.raises(SettingError, match=name):
            Settings.from_env(env)
    settings = Settings.from_env({"REDIS_TLS_CA_FILE": str(ca), "REDIS_TLS_VERIFY": "false"})
    assert (settings.redis_tls_ca_file, settings.redis_tls_verify) == (str(ca), False)
    assert Settings.from_env({}).redis_tls_verify is True
