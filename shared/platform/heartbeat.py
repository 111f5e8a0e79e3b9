"""Liveness for the processes that serve no HTTP: each Celery worker and the scheduler rewrites a
small file from its own main loop, and `summaries health NAME` (a container platform's liveness
probe, run beside the process) says whether the file is recent and its writer still alive.

Written from the loop that does the work (the worker's event loop, the scheduler's tick), not from a
thread of its own: a process whose loop is stuck stops beating, which is what a probe must see.
One file per name under the data directory: the worker node name's prefix (`summaries`,
`callbacks`, from `-n summaries@%h`) or `scheduler`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from shared.platform.config import Settings

SCHEDULER = "scheduler"

log = logging.getLogger(__name__)


def path(settings: Settings, name: str) -> Path:
    return settings.data_dir / "health" / f"{name}.json"


def beat(settings: Settings, name: str) -> None:
    """Record that `name` is alive now; atomic, so a probe never reads half a file. A failure to
    write is logged, never raised: raised from the worker's event loop it would pass for a lost
    broker, and the work itself does not depend on it (the probe then fails, which is the point)."""
    target = path(settings, name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.{os.getpid()}")
        temporary.write_text(json.dumps({"pid": os.getpid(), "at": time.time()}))
        os.replace(temporary, target)
    except OSError as error:
        log.warning("cannot write the heartbeat %s: %s", target, error.strerror or error)


def problem(settings: Settings, name: str, max_age_s: float) -> str | None:
    """None when `name` beat within max_age_s and its process lives; else what is wrong, in words."""
    try:
        record = json.loads(path(settings, name).read_text())
        pid, at = int(record["pid"]), float(record["at"])
    except FileNotFoundError:
        return f"{name}: no heartbeat yet at {path(settings, name)}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"{name}: unreadable heartbeat at {path(settings, name)}"
    try:  # first: a process that is gone is the plainest answer
        os.kill(pid, 0)
    except ProcessLookupError:
        return f"{name}: process {pid} has exited"
    except PermissionError:
        pass  # alive, another user's
    age_s = time.time() - at
    if age_s > max_age_s:
        return f"{name}: last heartbeat {age_s:.0f}s ago (more than {max_age_s:g}s)"
    return None


# The scheduler seen from anywhere: the sweep it sends every SWEEP_INTERVAL_S records when a worker ran
# it, in Redis (the heartbeat files above are one machine's). The console reads it.
LAST_SWEEP_KEY = "cfs:scheduler:last-sweep"


def record_sweep(redis) -> None:
    redis.set(LAST_SWEEP_KEY, f"{time.time():.3f}", ex=24 * 3600)


def last_sweep_age_s(redis) -> float | None:
    raw = redis.get(LAST_SWEEP_KEY)
    try:
        return None if raw is None else max(0.0, time.time() - float(raw))
    except ValueError:
        return None
