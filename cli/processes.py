"""The processes of a deployment, defined once: the Procfile, `summaries up`, the tests and the
bench all build their command lines here (tests/test_layout.py fails when the Procfile drifts).

Each function returns the arguments after `python -m` (or the executable's name, in the Procfile).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

CELERY_APP = "worker.celery_app"
WSGI_APP = "api.wsgi:application"
CONSOLE_APP = "console.wsgi:application"


@dataclass(frozen=True)
class WorkerKind:
    queue: str
    pool: str
    concurrency: int  # the default; the Procfile lets an environment variable override it
    concurrency_variable: str
    node: str  # the node name's prefix; `@%h` adds the host


WORKERS = {
    # Summaries are CPU and database work: processes.
    "worker": WorkerKind("summaries", "prefork", 2, "WORKER_CONCURRENCY", "summaries"),
    # Callbacks wait on other people's servers: threads, many of them, in a worker of their own.
    "callbacks": WorkerKind("callbacks", "threads", 64, "CALLBACK_CONCURRENCY", "callbacks"),
}
WEB_PROCESSES, WEB_PORT = 2, 8080
CONSOLE_PROCESSES, CONSOLE_PORT = 2, 8081


def web(bind: str, processes: int | str = WEB_PROCESSES, app: str = WSGI_APP) -> list[str]:
    """gunicorn with our configuration; `app` only for the bench's baselines."""
    return ["gunicorn", "-c", "python:api.gunicorn_conf", app, "--bind", bind, "--workers", str(processes)]


def console(bind: str, processes: int | str = CONSOLE_PROCESSES) -> list[str]:
    """The operators' console: gunicorn with its own configuration, on its own port."""
    return ["gunicorn", "-c", "python:console.gunicorn_conf", CONSOLE_APP, "--bind", bind, "--workers", str(processes)]


def worker(kind: str, concurrency: int | str | None = None, node: str | None = None, queues: str | None = None,
           app: str = CELERY_APP) -> list[str]:
    """A Celery worker of `kind`; `queues` and `app` only for tests and the bench's baseline."""
    spec = WORKERS[kind]
    return ["celery", "-A", app, "worker", "-Q", queues or spec.queue, "--pool", spec.pool,
            "--concurrency", str(concurrency or spec.concurrency), "-n", f"{node or spec.node}@%h"]


def scheduler(schedule_file: str) -> list[str]:
    return ["celery", "-A", CELERY_APP, "beat", "-s", schedule_file]


def python_m(arguments: list[str]) -> list[str]:
    """Run with this interpreter: the child gets the same virtualenv whatever PATH says."""
    return [sys.executable, "-m", *arguments]


def procfile() -> str:
    """The Procfile, rendered from the definitions above with the platform's variables."""
    lines = {
        "release": ["summaries", "migrate"],
        "web": web(f"0.0.0.0:${{PORT:-{WEB_PORT}}}", f"${{WEB_CONCURRENCY:-{WEB_PROCESSES}}}"),
        **{name: worker(name, f"${{{spec.concurrency_variable}:-{spec.concurrency}}}")
           for name, spec in WORKERS.items()},
        "scheduler": scheduler("/tmp/celerybeat-schedule"),
        # Loopback: the console is for operators (a proxy of theirs, or an SSH tunnel), never public.
        "console": console(f"${{CONSOLE_HOST:-127.0.0.1}}:${{CONSOLE_PORT:-{CONSOLE_PORT}}}"),
    }
    return "".join(f"{name}: {' '.join(command)}\n" for name, command in lines.items())
