"""The Celery entry point: `celery -A worker.celery_app worker -Q summaries,callbacks`."""

from celery.signals import worker_process_init

from shared.config import get_settings
from shared.logs import configure_logging
from shared.queue import get_celery

configure_logging(get_settings().log_level)
app = get_celery()
app.conf.include = ["worker.summaries", "worker.callbacks", "worker.sweeper"]


@worker_process_init.connect
def _fresh_connections(**_):
    # A forked pool process must not share the parent's database connections.
    from shared.db import get_engine

    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
