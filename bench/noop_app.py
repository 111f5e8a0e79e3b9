"""The baseline for the workers: a Celery app with our broker and settings, whose task does nothing
but tell the bench it ran (an LPUSH of the time it was sent, for round trips and counting)."""

import time

from shared.platform.config import get_settings
from shared.platform.queue import broker_url, get_redis, make_celery

app = make_celery(broker_url(get_settings()), get_settings())
app.conf.task_default_queue = "bench-noop"
app.conf.task_routes = {}
app.conf.beat_schedule = {}
DONE_KEY = "bench:noop:done"


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop(sent_at: float) -> None:
    get_redis().lpush(DONE_KEY, f"{sent_at}:{time.time()}")
