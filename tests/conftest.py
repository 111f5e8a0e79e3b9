"""Real PostgreSQL and Redis for every test that needs them.

TEST_DATABASE_URL / TEST_REDIS_URL when set (CI sets them), otherwise embedded servers started in a
temporary directory for this run. The schema is rebuilt with the migrations once per run; every
test starts from empty tables and an empty Redis database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, text

# Before anything imports prometheus_client (through shared.platform.metrics): this run's own samples.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="cfs-test-metrics-")

from cli.migrate import upgrade
from shared.platform import db  # noqa: E402
from shared.platform.embedded import EmbeddedRedis, postgres_url
from tests.processes import RUNNING, stop_all
from tests.support import TABLES, WsgiClient, make_account, reset_caches


@pytest.fixture(scope="session", autouse=True)
def _stop_every_server_at_the_end():
    """What a module or session fixture started and did not stop (it failed before its finalizer)."""
    yield
    stop_all(set(RUNNING))


@pytest.fixture(autouse=True)
def _stop_what_the_test_started():
    """Every server or worker the test started is stopped when it ends, passed, failed or errored:
    a process it left behind would hold ports and eat the cores of the tests after it. The ones
    started before (by module fixtures) are theirs to stop."""
    before = set(RUNNING)
    yield
    left = set(RUNNING) - before
    problems = stop_all(left)
    assert not problems, f"could not stop what the test started: {problems}"


@pytest.fixture(scope="session")
def service_urls():
    data_dir = Path(tempfile.mkdtemp(prefix="cfs-test-"))
    embedded_redis = None
    database = os.environ.get("TEST_DATABASE_URL") or postgres_url(data_dir)
    broker = os.environ.get("TEST_REDIS_URL")
    if not broker:
        embedded_redis = EmbeddedRedis(data_dir)
        broker = embedded_redis.start()
    # A create rate limit out of the way of the burst tests; test_security sets its own.
    # Given DATABASE_URL, every process needs the keys, as in production; one per run.
    os.environ.setdefault("AUTH_TOKEN_KEYS", Fernet.generate_key().decode())
    os.environ.update(DATABASE_URL=database, REDIS_URL=broker, SUMMARIES_DATA_DIR=str(data_dir),
                      SWEEP_INTERVAL_S="1", SUMMARY_LEASE_S="3", CREATE_RATE_LIMIT="100000/second")
    reset_caches()
    engine = create_engine(db.sqlalchemy_url(database))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    upgrade(database)
    yield {"database": database, "redis": broker, "data_dir": data_dir}
    reset_caches()
    if embedded_redis:
        embedded_redis.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_redis_outage():
    """A test that pointed this process at a Redis that is not there leaves no outage to the next."""
    from shared.platform.redis_outage import LATCH

    LATCH.reset()
    yield
    LATCH.reset()


@pytest.fixture
def settings_env(service_urls):
    """settings_env(NAME=value, ...): this process reads its settings (and makes its engine and Redis
    clients) anew from the environment with these set; all undone, and read again, after the test."""
    patch = pytest.MonkeyPatch()

    def apply(**values: str) -> None:
        for name, value in values.items():
            patch.setenv(name, value)
        reset_caches()

    yield apply
    from shared.platform import db

    if db.get_engine.cache_info().currsize:
        db.get_engine().dispose()
    patch.undo()
    reset_caches()


@pytest.fixture
def engine(service_urls):
    engine = db.get_engine()
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    return engine


@pytest.fixture
def redis_client(service_urls):
    client = redis.Redis.from_url(service_urls["redis"])
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def account(engine, redis_client):
    """An account of its own (no parent), with its SID and auth token."""
    return make_account(engine)


@pytest.fixture
def app(engine, redis_client):
    from api.factory import create_app

    return create_app()


@pytest.fixture
def client(app):
    return WsgiClient(app)


@pytest.fixture(scope="module")
def server(service_urls, tmp_path_factory):
    """The API under gunicorn (the Procfile's web process), on a loopback port, for a module's tests."""
    from tests.processes import gunicorn

    process, base_url = gunicorn(tmp_path_factory.mktemp("gunicorn"))
    yield base_url
    process.stop()
