"""Prometheus metrics from every process, correct under several gunicorn and Celery processes.

prometheus_client's multiprocess mode: each process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR, and a scrape sums them. prometheus_client reads that variable when it is
imported and whenever a process opens a sample file, so every use of it goes through this module,
which hands it the setting (Settings.metrics_dir) on the first use of a metric, never at import.
Queue depths and summary counts are read from Redis and PostgreSQL at scrape time instead.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

from shared.platform.config import get_settings

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
log = logging.getLogger(__name__)

DELIVERY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600)


@functools.cache
def multiprocess_dir() -> Path:
    path = get_settings().metrics_dir
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)  # prometheus_client's own way to be told
    return path


_MAKING = threading.Lock()
_made: dict[str, object] = {}


def _metrics() -> dict[str, object]:
    # Made once under a lock: functools.cache does not stop two of the callbacks worker's threads from
    # both making them, and prometheus_client refuses the second registration (DuplicateTimeseries).
    if not _made:
        with _MAKING:
            if not _made:
                _made.update(_make())
    return _made


def _make() -> dict[str, object]:
    multiprocess_dir()
    from prometheus_client import Counter, Histogram

    return dict(
        HTTP_REQUESTS=Counter("cfs_http_requests_total", "API requests answered", ["route", "method", "status"]),
        HTTP_LATENCY=Histogram("cfs_http_request_duration_seconds", "API request handling time", ["route", "method"],
                               buckets=LATENCY_BUCKETS_S),
        SUMMARIES_CREATED=Counter("cfs_summaries_created_total", "Summaries accepted by the API"),
        SUMMARIES_FINISHED=Counter("cfs_summaries_finished_total", "Summaries that reached a final status",
                                   ["status"]),
        COMPUTE_SECONDS=Histogram("cfs_summary_compute_seconds", "Time to compute one summary (claim to completed)",
                                  buckets=LATENCY_BUCKETS_S),
        SWEEPER_RECOVERED=Counter("cfs_sweeper_recovered_total", "Lost jobs the sweeper sent again", ["kind"]),
        CALLBACK_ATTEMPTS=Counter("cfs_callback_attempts_total", "Callback attempts by outcome", ["outcome"]),
        CALLBACK_LATENCY=Histogram("cfs_callback_attempt_seconds", "Callback request time",
                                   buckets=LATENCY_BUCKETS_S),
        CALLBACK_DELIVERY=Histogram("cfs_callback_delivered_seconds",
                                    "From the summary finishing to its callback delivered", buckets=DELIVERY_BUCKETS_S),
    )


def __getattr__(name: str):
    # PEP 562: `metrics.HTTP_REQUESTS` is made on first use, once the directory is known.
    try:
        return _metrics()[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


class LiveStateCollector:
    """Read at scrape time: queue depth and oldest message age (Redis), and summaries and deliveries
    by state (PostgreSQL), so that every scrape sees the system as it is. A server that does not
    answer loses its gauges, not the scrape: `cfs_dependency_up` says which, and every counter is
    still there, which is when monitoring matters most."""

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily("cfs_dependency_up", "Whether the server answered this scrape",
                               labels=["dependency"])
        for dependency, gauges in (("redis", self._queues), ("postgresql", self._states)):
            try:
                families = list(gauges())
            except Exception:
                log.warning("%s did not answer a scrape; its gauges are left out", dependency, exc_info=True)
                families = []
            up.add_metric([dependency], 1 if families else 0)
            yield from families
        yield up

    @staticmethod
    def _queues():
        from prometheus_client.core import GaugeMetricFamily

        from shared.platform.queue import CALLBACKS_QUEUE, SUMMARIES_QUEUE, get_redis, queue_depth

        depth = GaugeMetricFamily("cfs_queue_depth", "Messages waiting in a queue", labels=["queue"])
        age = GaugeMetricFamily("cfs_queue_oldest_message_age_seconds", "Age of the oldest waiting message",
                                labels=["queue"])
        for queue in (SUMMARIES_QUEUE, CALLBACKS_QUEUE):
            waiting, oldest_s = queue_depth(get_redis(), queue)
            depth.add_metric([queue], waiting)
            age.add_metric([queue], oldest_s or 0.0)
        return depth, age

    @staticmethod
    def _states():
        from prometheus_client.core import GaugeMetricFamily
        from sqlalchemy import text

        from shared.platform.db import get_engine

        summaries = GaugeMetricFamily("cfs_summaries", "Summaries by status", labels=["status"])
        deliveries = GaugeMetricFamily("cfs_callback_deliveries", "Callback deliveries by state", labels=["state"])
        expired = GaugeMetricFamily("cfs_summaries_expired_leases", "In-progress summaries whose lease expired")
        with get_engine().connect() as connection:
            for status, count in connection.execute(text("SELECT status, count(*) FROM feedback_summaries "
                                                         "GROUP BY status")):
                summaries.add_metric([status], count)
            for state, count in connection.execute(text("SELECT state, count(*) FROM callback_deliveries "
                                                        "GROUP BY state")):
                deliveries.add_metric([state], count)
            expired.add_metric([], connection.execute(text(
                "SELECT count(*) FROM feedback_summaries WHERE status = 'in-progress' AND lease_expires_at < now()"
            )).scalar())
        return summaries, deliveries, expired


def scrape_registry(live: bool = True):
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_dir()))
    if live:
        registry.register(LiveStateCollector())
    return registry


def exposition(live: bool = True) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(scrape_registry(live)), CONTENT_TYPE_LATEST


def serve(port: int) -> None:
    """This process's and its siblings' samples on their own port, from a background thread."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=scrape_registry(live=False))


def process_exited(pid: int) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(multiprocess_dir()))


def clear() -> None:
    """Forget the samples of a previous run (call before any process of a new run starts)."""
    for stale in multiprocess_dir().glob("*.db"):
        stale.unlink()
