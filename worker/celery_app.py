"""The Celery entry point: `celery -A worker.celery_app worker -Q summaries` (and `-Q callbacks`)."""

import os
import sys
import time
import warnings

from celery import bootsteps
from celery.beat import PersistentScheduler
from celery.signals import (
    celeryd_after_setup,
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)

from shared.platform import heartbeat, metrics
from shared.platform.config import check_or_exit, get_settings
from shared.platform.logs import configure_logging
from shared.platform.queue import CALLBACKS_QUEUE, get_celery

# As the module loads, in every worker and the scheduler: a bad setting is one line and exit 2.
PROCESS = "scheduler" if "beat" in sys.argv[1:] else "worker"
check_or_exit(PROCESS, keys=False, heartbeats=True)
configure_logging(get_settings().log_level, get_settings().log_format)
if get_settings().log_format == "text":
    # For a person at a terminal (`summaries up`): Celery's warning that the worker runs as root (a
    # development machine's usual case) is a screenful on every start. JSON logs keep it.
    from celery.exceptions import SecurityWarning

    warnings.filterwarnings("ignore", category=SecurityWarning)
app = get_celery()
app.conf.include = ["worker.summaries", "worker.callbacks", "worker.sweeper", "worker.folding"]


@setup_logging.connect
def _json_logging(**_):
    # Connected, so Celery leaves the root logger to us: its own lines come out as JSON too.
    configure_logging(get_settings().log_level, get_settings().log_format)


@celeryd_after_setup.connect
def _keys_for_callbacks(sender, instance, **_):
    # Callbacks are signed with the accounts' tokens: a callbacks worker needs the keys they were
    # encrypted with, and finds out now rather than at its first delivery.
    if CALLBACKS_QUEUE in instance.app.amqp.queues.consume_from:
        check_or_exit("worker")


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


class Heartbeat(bootsteps.StartStopStep):
    """`summaries health worker|callbacks`: beats from the consumer's event loop (its timer), so a
    worker whose loop hangs, or that has lost its broker, stops beating."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, consumer):
        settings, name = get_settings(), consumer.hostname.split("@", 1)[0]
        heartbeat.beat(settings, name)
        self.timer_entry = consumer.timer.call_repeatedly(settings.heartbeat_interval_s, heartbeat.beat,
                                                          (settings, name))

    def stop(self, consumer):
        entry = getattr(self, "timer_entry", None)
        if entry is not None:
            entry.cancel()


app.steps["consumer"].add(Heartbeat)


class Scheduler(PersistentScheduler):
    """celery beat's scheduler, beating for `summaries health scheduler` from its tick."""

    _last_beat = 0.0

    def tick(self, *args, **kwargs):
        interval = super().tick(*args, **kwargs)
        now = time.monotonic()
        if now - self._last_beat >= get_settings().heartbeat_interval_s:
            heartbeat.beat(get_settings(), heartbeat.SCHEDULER)
            self._last_beat = now
        return min(interval, get_settings().heartbeat_interval_s)


app.conf.beat_scheduler = f"{__name__}:{Scheduler.__name__}"
