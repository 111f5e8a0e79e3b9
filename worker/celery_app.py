"""The Celery entry point: `celery -A worker.celery_app worker -Q summaries` (and `-Q callbacks`)."""

import os

from celery.signals import setup_logging, worker_process_init, worker_process_shutdown, worker_ready

from shared.platform import metrics
from shared.platform.config import get_settings
from shared.platform.logs import configure_logging
from shared.platform.queue import get_celery

configure_logging(get_settings().log_level)
app = get_celery()
app.conf.include = ["worker.summaries", "worker.callbacks", "worker.sweeper", "worker.folding"]


@setup_logging.connect
def _json_logging(**_):
    # Connected, so Celery leaves the root logger to us: its own lines come out as JSON too.
    configure_logging(get_settings().log_level)


@worker_process_init.connect
def _fresh_connections(**_):
    # A forked pool process must not share the parent's database connections.
    from shared.platform.db import get_engine

    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)


@worker_process_shutdown.connect
def _metrics_process_gone(**_):
    metrics.process_exited(os.getpid())


@worker_ready.connect
def _serve_metrics(**_):
    """WORKER_METRICS_PORT: for a machine that runs workers and no API to scrape them through."""
    port = get_settings().worker_metrics_port
    if port:
        metrics.serve(port)
