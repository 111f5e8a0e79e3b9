"""The Celery application's wiring, shared by the API (which sends) and the workers (which run).

Messages are JSON and carry ids only; PostgreSQL holds the state, so there is no result backend.
"""

from __future__ import annotations

import functools
import json
import logging
import time

import redis
from celery import Celery

from shared.platform import embedded, redis_connect, redis_transport
from shared.platform.config import Settings, get_settings, require_servers
from shared.platform.redis_outage import LATCH, RedisDown

log = logging.getLogger(__name__)

SUMMARIES_QUEUE = "summaries"
CALLBACKS_QUEUE = "callbacks"
COMPUTE_SUMMARY = "summaries.compute"
SWEEP = "summaries.sweep"
EXPIRE_PROVISIONAL_CALLS = "summaries.expire_provisional_calls"
EXPIRE_PROVISIONAL_INTERVAL_S = 600.0  # the grace is hours: every 10 minutes is plenty
DELIVER_CALLBACK = "callbacks.deliver"
# "A compute message for this summary is in Redis": set on send, cleared on claim. Lost with the
# queue itself (FLUSHALL, an emptied restart), which is exactly when the sweeper must re-send.
IN_FLIGHT_KEY = "cfs:inflight:{sid}"
# A marker outlives its message's due time by this many sweeps, then the sweeper stops trusting it:
# a message held by a worker that died (Redis would hand it out again only after the hour-long
# visibility timeout) is sent again within seconds, from the database's state alone. A message
# merely waiting in a long queue may so be sent twice, which the guarded claims make harmless.
MARKER_SWEEPS = 3


def marker_ttl_s(settings: Settings) -> int:
    return max(2, MARKER_SWEEPS * settings.sweep_interval_s)


CALLBACK_IN_FLIGHT_KEY = "cfs:inflight:callback:{sid}"
# A callback retry further away than this is not sent as a delayed message: Redis would hand an
# unacknowledged message to another worker after its visibility timeout (1 h). PostgreSQL keeps
# the due time, and the sweeper sends the message when it is due.
MAX_COUNTDOWN_S = 300
# When a message was sent (Celery's messages carry no time): the age of a queue's oldest message.
SENT_AT_HEADER = "cfs_sent_at"


def broker_url(settings: Settings) -> str:
    """REDIS_URL, or the embedded Redis that `summaries up` runs, where embedded servers are asked for."""
    if settings.redis_url:
        return settings.redis_url
    require_servers(settings)
    return embedded.redis_url(settings.data_dir)


REDIS_TRANSPORT = f"{redis_transport.__name__}:{redis_transport.Transport.__name__}"
SENTINEL_TRANSPORT = f"{redis_transport.__name__}:{redis_transport.SentinelTransport.__name__}"


def make_celery(url: str, settings: Settings) -> Celery:
    # Sentinel URLs in kombu's form, and TLS options always spelled out: named explicitly, the
    # transport never sees the rediss:// scheme, so kombu would not even turn TLS on by itself.
    kombu_url, use_ssl, sentinel_options = redis_connect.kombu_broker(settings, url)
    app = Celery("call_feedback_summaries", broker=kombu_url, set_as_current=False)
    app.conf.update(
        # kombu's Redis transport with the fix that keeps workers alive when Redis restarts.
        broker_transport=SENTINEL_TRANSPORT if sentinel_options else REDIS_TRANSPORT,
        broker_use_ssl=use_ssl,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        # A message is acknowledged only after its task ran, and a worker that dies returns it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=SUMMARIES_QUEUE,
        task_routes={"summaries.*": {"queue": SUMMARIES_QUEUE}, "callbacks.*": {"queue": CALLBACKS_QUEUE}},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.enqueue_timeout_s,
        broker_transport_options={
            "socket_timeout": settings.enqueue_timeout_s,
            "socket_connect_timeout": settings.enqueue_timeout_s,
            # Redelivery of an unacknowledged message after a lost worker; the sweeper is faster.
            "visibility_timeout": 3600,
            **sentinel_options,
        },
        # Events for Flower and `celery events`. Not the "sent" event: it is a second publish on every
        # create (0.5 ms of 4.5 when measured), and Flower shows a task from "received" on anyway.
        worker_send_task_events=True,
        task_send_sent_event=False,
        beat_schedule={
            "sweep-lost-work": {"task": SWEEP, "schedule": float(settings.sweep_interval_s)},
            # worker/folding.py: rollup deltas into the daily rows; a stale message is dropped.
            "fold-rollups": {"task": "summaries.fold_rollups", "schedule": 1.0, "options": {"expires": 10}},
            # worker/sweeper.py: provisional calls nothing confirmed within PROVISIONAL_CALL_GRACE_S.
            "expire-provisional-calls": {"task": EXPIRE_PROVISIONAL_CALLS, "schedule": EXPIRE_PROVISIONAL_INTERVAL_S,
                                         "options": {"expires": EXPIRE_PROVISIONAL_INTERVAL_S}},
        },
    )
    return app


@functools.cache
def get_celery() -> Celery:
    settings = get_settings()
    return make_celery(broker_url(settings), settings)


@functools.cache
def get_redis() -> redis.Redis:
    settings = get_settings()
    return redis_connect.client(settings, broker_url(settings))


def _send(task: str, queue: str, marker: str, summary_sid: str, delay_s: float = 0) -> bool:
    """Send the task's message, then set its in-flight marker; False when Redis cannot take it."""
    def send() -> None:
        get_celery().send_task(task, args=[summary_sid], queue=queue, countdown=delay_s or None, retry=False,
                               headers={SENT_AT_HEADER: time.time()})
        get_redis().set(marker.format(sid=summary_sid), 1, ex=int(delay_s) + marker_ttl_s(get_settings()))

    try:
        LATCH.call(send)
    except RedisDown:
        log.info("%s not sent (Redis down); the sweeper will send it", task, extra={"summary_sid": summary_sid})
        return False
    except Exception:
        log.warning("%s not sent; the sweeper will send it", task, exc_info=True, extra={"summary_sid": summary_sid})
        return False
    return True


def _clear(marker: str, summary_sid: str) -> None:
    try:
        LATCH.call(get_redis().delete, marker.format(sid=summary_sid))
    except RedisDown:
        pass  # it expires with its TTL
    except redis.RedisError:
        log.warning("could not clear an in-flight marker", extra={"summary_sid": summary_sid})


def _without_marker(client: redis.Redis, marker: str, summary_sids: list[str]) -> list[str]:
    if not summary_sids:
        return []
    markers = client.mget([marker.format(sid=sid) for sid in summary_sids])
    return [sid for sid, found in zip(summary_sids, markers) if found is None]


def enqueue_summary(summary_sid: str) -> bool:
    """Send the compute message; False when Redis cannot take it (the sweeper re-sends it later)."""
    return _send(COMPUTE_SUMMARY, SUMMARIES_QUEUE, IN_FLIGHT_KEY, summary_sid)


def clear_in_flight(summary_sid: str) -> None:
    _clear(IN_FLIGHT_KEY, summary_sid)


def without_message(client: redis.Redis, summary_sids: list[str]) -> list[str]:
    """The summaries that have no compute message in flight."""
    return _without_marker(client, IN_FLIGHT_KEY, summary_sids)


def enqueue_callback(summary_sid: str, delay_s: float = 0) -> bool:
    """Send the delivery message now or after delay_s; False when it is left to the sweeper."""
    if delay_s > MAX_COUNTDOWN_S:
        return False
    return _send(DELIVER_CALLBACK, CALLBACKS_QUEUE, CALLBACK_IN_FLIGHT_KEY, summary_sid, delay_s)


def clear_callback_in_flight(summary_sid: str) -> None:
    _clear(CALLBACK_IN_FLIGHT_KEY, summary_sid)


def callbacks_without_message(client: redis.Redis, summary_sids: list[str]) -> list[str]:
    """The deliveries that have no message in flight."""
    return _without_marker(client, CALLBACK_IN_FLIGHT_KEY, summary_sids)


def queue_depth(client: redis.Redis, queue: str) -> tuple[int, float | None]:
    """(messages waiting, age in seconds of the oldest) for a queue on the Redis broker. Kombu pushes
    on the left and pops on the right, so the oldest message is the last element."""
    with client.pipeline() as pipe:
        depth, oldest = pipe.llen(queue).lindex(queue, -1).execute()
    if not oldest:
        return depth, None
    try:
        sent_at = json.loads(oldest)["headers"].get(SENT_AT_HEADER)
    except (ValueError, KeyError, AttributeError):
        sent_at = None
    return depth, (max(0.0, time.time() - float(sent_at)) if sent_at else None)
