"""Prometheus metrics from every process, correct under several gunicorn and Celery processes.

prometheus_client's multiprocess mode: each process writes its samples to files in
PROMETHEUS_MULTIPROC_DIR, and a scrape sums them. The directory must be set before
prometheus_client is imported, so every import of it goes through this module. Queue depths and
summary counts are read from Redis and PostgreSQL at scrape time instead.
"""

from __future__ import annotations

import os
from pathlib import Path


def _multiprocess_dir() -> Path:
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not configured:
        from shared.config import get_settings

        configured = str(get_settings().data_dir / "metrics")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = configured
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    return path


MULTIPROCESS_DIR = _multiprocess_dir()

from prometheus_client import (  # noqa: E402  (after the directory is known)
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DELIVERY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600)

HTTP_REQUESTS = Counter("cfs_http_requests_total", "API requests answered", ["route", "method", "status"])
HTTP_LATENCY = Histogram("cfs_http_request_duration_seconds", "API request handling time", ["route", "method"],
                         buckets=LATENCY_BUCKETS_S)
SUMMARIES_CREATED = Counter("cfs_summaries_created_total", "Summaries accepted by the API")
SUMMARIES_FINISHED = Counter("cfs_summaries_finished_total", "Summaries that reached a final status", ["status"])
COMPUTE_SECONDS = Histogram("cfs_summary_compute_seconds", "Time to compute one summary (claim to completed)",
                            buckets=LATENCY_BUCKETS_S)
SWEEPER_RECOVERED = Counter("cfs_sweeper_recovered_total", "Lost jobs the sweeper sent again", ["kind"])
CALLBACK_ATTEMPTS = Counter("cfs_callback_attempts_total", "Callback attempts by outcome", ["outcome"])
CALLBACK_LATENCY = Histogram("cfs_callback_attempt_seconds", "Callback request time", buckets=LATENCY_BUCKETS_S)
CALLBACK_DELIVERY = Histogram("cfs_callback_delivered_seconds", "From the summary finishing to its callback "
                              "delivered", buckets=DELIVERY_BUCKETS_S)


class LiveStateCollector:
    """Read at scrape time: queue depth and oldest message age (Redis), and summaries and deliveries
    by state (PostgreSQL), so that every scrape sees the system as it is."""

    def collect(self):
        from sqlalchemy import text

        from shared.db import get_engine
        from shared.queue import CALLBACKS_QUEUE, SUMMARIES_QUEUE, get_redis, queue_depth

        depth = GaugeMetricFamily("cfs_queue_depth", "Messages waiting in a queue", labels=["queue"])
        age = GaugeMetricFamily("cfs_queue_oldest_message_age_seconds", "Age of the oldest waiting message",
                                labels=["queue"])
        for queue in (SUMMARIES_QUEUE, CALLBACKS_QUEUE):
            waiting, oldest_s = queue_depth(get_redis(), queue)
            depth.add_metric([queue], waiting)
            age.add_metric([queue], oldest_s or 0.0)
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
        yield from (depth, age, summaries, deliveries, expired)


def scrape_registry(live: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(MULTIPROCESS_DIR))
    if live:
        registry.register(LiveStateCollector())
    return registry


def exposition(live: bool = True) -> tuple[bytes, str]:
    return generate_latest(scrape_registry(live)), CONTENT_TYPE_LATEST


def process_exited(pid: int) -> None:
    multiprocess.mark_process_dead(pid, str(MULTIPROCESS_DIR))


def clear() -> None:
    """Forget the samples of a previous run (call before any process of a new run starts)."""
    for stale in MULTIPROCESS_DIR.glob("*.db"):
        stale.unlink()
