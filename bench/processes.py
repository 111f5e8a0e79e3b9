"""Child processes for the bench: gunicorn, Celery workers; output kept in files under the work dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import psutil

from cli import processes
from shared.platform.embedded import free_port


class Child:
    def __init__(self, name: str, command: list[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.log = open(log_dir / f"{name}.log", "wb")
        self.popen = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=self.log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def peak_rss_mb(self) -> dict[str, float]:
        """Resident memory now, in MB, of this process and each of its children, by pid."""
        found = {}
        try:
            root = psutil.Process(self.popen.pid)
            for process in [root, *root.children(recursive=True)]:
                found[f"{process.pid}"] = process.memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            pass
        return found

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self.log.close()


def gunicorn(app: str, log_dir: Path, workers: int, name: str) -> tuple[Child, str]:
    port = free_port()
    child = Child(name, processes.python_m(processes.web(f"127.0.0.1:{port}", workers, app)), log_dir)
    return child, _answering(child, f"http://127.0.0.1:{port}", log_dir, name)


def console(log_dir: Path, workers: int, name: str, env: dict | None = None) -> tuple[Child, str]:
    """The Procfile's `console` (cli/processes.py), on a free loopback port."""
    port = free_port()
    child = Child(name, processes.python_m(processes.console(f"127.0.0.1:{port}", workers)), log_dir, env)
    return child, _answering(child, f"http://127.0.0.1:{port}", log_dir, name)


def _answering(child: Child, url: str, log_dir: Path, name: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and child.popen.poll() is None:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return url
        except urllib.error.HTTPError:
            return url  # answering, even if not with 200 (the bare app has no /healthz)
        except OSError:
            time.sleep(0.2)
    child.stop()
    raise RuntimeError(f"{name} did not start; see {log_dir}/{name}.log")


def celery_worker(app: str, queues: str, log_dir: Path, name: str, concurrency: int, pool: str = "prefork",
                  env: dict | None = None) -> Child:
    """The Procfile's `worker` (prefork) or `callbacks` (threads) process; `app` may be the baseline's."""
    kind = "callbacks" if pool == "threads" else "worker"
    command = processes.worker(kind, concurrency, node=name, queues=queues, app=app)
    return Child(name, processes.python_m([*command, "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                                           "--without-heartbeat"]), log_dir, env)
