"""Redis restarted empty, again and again, under running workers of both kinds (a prefork summaries
worker and a threads callbacks worker) holding delayed retries: no worker exits on its own, and
every summary completes and every callback is delivered once Redis stays up (kombu 5.7's transport
killed workers here: shared/platform/redis_transport.py)."""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import pytest

from shared.platform.embedded import _answers_ping, _redis_binary
from tests.processes import celery_beat, celery_worker, running, wait_for
from tests.receiver import Receiver, Reply
from tests.support import free_port, make_account, make_calls, summaries_path
from tests.test_callbacks import WORKER_ENV, settled

pytestmark = pytest.mark.slow

RESTARTS = 5


class PrivateRedis:
    """A redis-server of the test's own (restarting the shared one would break other tests), with
    nothing kept on disk: each start is an empty Redis on the same port."""

    def __init__(self, work):
        self.port, self.work, self.process = free_port(), work, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen([_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                         "--appendonly", "no", "--dir", str(self.work)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running(self)  # stopped (killed) by the test, or by a finalizer if the test fails first
        wait_for(lambda: _answers_ping(self.port), 10, 0.05, "redis to start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()  # as a crash would: every connection cut at once
            self.process.wait(10)


def test_workers_survive_redis_restarted_empty_and_finish_everything(engine, client, redis_client, tmp_path):
    redis = PrivateRedis(tmp_path)
    redis.start()
    receiver = Receiver()
    env = {**WORKER_ENV, "REDIS_URL": redis.url, "CALLBACK_BACKOFF_INITIAL_S": "2", "CALLBACK_MAX_ATTEMPTS": "12"}
    workers = [celery_worker(tmp_path, "restart-s", queues="summaries", concurrency=2, env=env),
               celery_worker(tmp_path, "restart-c", queues="callbacks", concurrency=8, env=env, pool="threads")]
    beat = celery_beat(tmp_path, env)
    try:
        for worker in workers:
            wait_for(lambda: "ready." in worker.output(), 30, 0.2, f"{worker.name} to be ready")
        account = make_account(engine)
        make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)])
        url = receiver.script("/restart", Reply(500), Reply(200))
        # Created through the API (whose queue is the suite's Redis): the sweeper, on the private
        # Redis, finds them without a message and sends them, as after any loss of Redis.
        sids = [client.post(summaries_path(account.sid), auth=(account.sid, account.auth_token),
                            form={"StartDate": "2024-01-01", "EndDate": "2024-01-31", "StatusCallback": url}
                            ).json["sid"] for _ in range(8)]
        for _ in range(RESTARTS):
            time.sleep(2)  # work in flight: claims, attempts, delayed retries held by the workers
            redis.stop()
            time.sleep(1.5)
            redis.start()
        for worker in workers:
            assert worker.popen.poll() is None, worker.output()[-3000:]
        for sid in sids:
            settled(engine, sid, "delivered", 60)
        exited = [worker.name for worker in workers if worker.popen.poll() is not None]
        assert not exited and "Unrecoverable error" not in "".join(w.output() for w in workers)
    finally:
        for process in (*workers, beat):
            process.stop()
        receiver.close()
        redis.stop()
