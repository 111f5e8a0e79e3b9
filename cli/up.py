"""`summaries up`: the whole system in the foreground; Ctrl-C stops every part cleanly.

At a terminal (or with LOG_FORMAT=text) every process logs one short line per event, and `up`
prints each with the name of the process it came from (`web`, `worker`, `callbacks`,
`scheduler`); Celery's banners are off. The banner with the URL and the demo account comes once every
process answers, so it is the last block before the logs. Elsewhere (a file, a pipe, CI) the
processes write their JSON lines straight to `up`'s own stdout and stderr, as the Procfile's do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from cli import demo as demo_data
from cli import processes
from cli.accounts import create_account
from cli.migrate import upgrade
from cli.processes import python_m
from cli.seed import seed
from shared.accounts import secrets
from shared.models import Account
from shared.platform import heartbeat
from shared.platform.config import Settings, get_settings
from shared.platform.db import database_url, make_engine
from shared.platform.embedded import EmbeddedRedis, inherit_urls_env

DEMO_NAME = "Demo account"
DEMO_DAYS = 30
STOP_TIMEOUT_S = 20
RESTART_MAX_S, RESTART_RESET_S = 30.0, 60.0


@dataclass(frozen=True)
class Demo:
    account: Account
    operator_password: str


def ensure_demo(url: str, settings: Settings) -> Demo:
    """The demo account (and a subaccount), created and seeded the first time only, with something
    for every page of the console (cli/demo.py); the demo operator's password, new each time."""
    engine = make_engine(url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            demo = session.scalar(select(Account).where(Account.friendly_name == DEMO_NAME,
                                                        Account.parent_sid.is_(None)))
            if demo is None:
                demo = create_account(session, DEMO_NAME)
                sub = create_account(session, "Demo subaccount", demo.sid)
                session.commit()
                print("seeding the demo account (20,000 calls and a subaccount with 5,000, over 30 days)...",
                      flush=True)
                with engine.connect() as connection:
                    seed(connection, demo.sid, 20_000, DEMO_DAYS)
                    seed(connection, sub.sid, 5_000, DEMO_DAYS)
                demo_data.add_demo_data(engine, demo, sub, settings)
        demo_data.open_demo_circuit(demo, settings)
        return Demo(demo, demo_data.demo_operator(engine))
    finally:
        engine.dispose()


def _children(args: argparse.Namespace, data_dir, quiet: bool) -> list[tuple[str, list[str]]]:
    """The Procfile's processes (cli/processes.py), on this machine, logging at INFO; `quiet`: the
    Celery processes without their banners."""
    info = ["--loglevel", "INFO"]

    def celery(command: list[str]) -> list[str]:
        return [command[0], "--quiet", *command[1:]] if quiet else command

    return [
        ("web", python_m([*processes.web(f"{args.host}:{args.port}", args.web_processes), "--graceful-timeout", "10"])),
        ("console", python_m([*processes.console(f"{args.host}:{args.console_port}", 1), "--graceful-timeout", "5"])),
        ("worker", python_m([*celery(processes.worker("worker", args.worker_concurrency)), *info])),
        ("callbacks", python_m([*celery(processes.worker("callbacks")), *info])),
        ("scheduler", python_m([*celery(processes.scheduler(str(data_dir / "celerybeat-schedule"))), *info])),
    ]


# Each child and the heartbeat it writes once its main loop runs (shared/platform/heartbeat.py).
HEARTBEATS = {"worker": processes.WORKERS["worker"].node, "callbacks": processes.WORKERS["callbacks"].node,
              "scheduler": heartbeat.SCHEDULER}


def _answers(base_urls: list[str], settings: Settings, children: dict[str, subprocess.Popen]) -> bool:
    """The API and the console answer /healthz, and each worker and the scheduler has beaten from this
    very process."""
    for name, beat_name in HEARTBEATS.items():
        try:
            if json.loads(heartbeat.path(settings, beat_name).read_text())["pid"] != children[name].pid:
                return False  # none yet, or a previous run's
        except (OSError, ValueError, KeyError, TypeError):
            return False
    try:
        for base_url in base_urls:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                if response.status != 200:
                    return False
        return True
    except OSError:
        return False


def _wait_answering(base_urls: list[str], settings: Settings, children: dict, stopping, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        if any(process.poll() is not None for process in children.values()):
            return False
        if _answers(base_urls, settings, children):
            return True
        time.sleep(0.2)
    return False


class Prefixer:
    """Copies each child's output to our stdout, one whole line at a time, after the child's name:
    `web        | 16:01:33 request method=POST ...`. One lock: lines of two children never mix."""

    WIDTH = max(len(name) for name in ("web", "console", *HEARTBEATS))

    def __init__(self, out=None) -> None:
        self.out, self.lock = out or sys.stdout, threading.Lock()

    def write(self, text: str) -> None:
        with self.lock:
            _say(text, self.out)

    def follow(self, name: str, process: subprocess.Popen) -> None:
        def copy() -> None:
            for line in iter(process.stdout.readline, ""):
                if line.strip():  # Celery says "worker: Warm shutdown" after an empty line
                    self.write(f"{name:<{self.WIDTH}} | {line.rstrip()}\n")
            process.stdout.close()

        threading.Thread(target=copy, name=f"log-{name}", daemon=True).start()


def _say(text: str, stream) -> None:
    """Write, unless the terminal is gone (closed: SIGHUP, then EIO on every write). A child's output
    is still read and dropped, so the child never blocks on a full pipe while we stop it."""
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):
        pass


def text_logs(settings: Settings, stream=None) -> bool:
    """Text, prefixed: when LOG_FORMAT says text, or when it is unset and a person is watching."""
    if os.environ.get("LOG_FORMAT", "").strip():
        return settings.log_format == "text"
    return (stream or sys.stderr).isatty()


def _banner(base_url: str, console_url: str, found: Demo | None) -> str:
    lines = [f"\nCall Feedback Summaries is up at {base_url}"]
    demo = found.account if found is not None else None
    if demo is not None:
        lines += [f"  demo account  {demo.sid}", f"  auth token    {demo.auth_token}"]
    lines += ["", f"The operators' console is at {console_url}"]
    if found is not None:
        lines.append(f"  sign in as    {demo_data.DEMO_OPERATOR}, password {found.operator_password} "
                     "(a new one at each start)")
    else:
        lines.append("  sign in as a console user: summaries console-users create NAME --role operator")
    if demo is not None:
        end = dt.date.today()
        start = end - dt.timedelta(days=DEMO_DAYS)
        path = f"/2010-04-01/Accounts/{demo.sid}/Calls/FeedbackSummary"
        lines += [
            "",
            "Create a summary of the last 30 days, the subaccount included:",
            f"  curl -s -u {demo.sid}:{demo.auth_token} -d StartDate={start} -d EndDate={end} \\",
            f"       -d IncludeSubaccounts=true {base_url}{path}.json",
            "Fetch it (use the sid the create printed):",
            f"  curl -s -u {demo.sid}:{demo.auth_token} {base_url}{path}/FS....json",
        ]
    lines += ["", "Ctrl-C stops everything. The logs follow.\n"]
    return "\n".join(lines)


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, process in processes.items():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"{name} did not stop in {STOP_TIMEOUT_S}s; killing it\n", sys.stderr)
            process.kill()


class Restarts:
    """When a child that exited may be started again: at once, unless it died within a minute of its
    last start; then after a pause that doubles each time (1, 2, 4 ... RESTART_MAX_S seconds)."""

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self.pause_s: dict[str, float] = {}
        self.last_start: dict[str, float] = {}
        self.not_before: dict[str, float] = {}

    def due(self, name: str) -> bool:
        now = self.clock()
        if name not in self.not_before:  # just seen exiting: schedule its start
            quick = now - self.last_start.get(name, -RESTART_RESET_S) < RESTART_RESET_S
            self.pause_s[name] = min(RESTART_MAX_S, max(1.0, 2 * self.pause_s.get(name, 0.5))) if quick else 0.0
            self.not_before[name] = now + self.pause_s[name]
        if now < self.not_before[name]:
            return False
        del self.not_before[name]
        self.last_start[name] = now
        return True


def run(args: argparse.Namespace) -> int:
    # Until the children run, a Ctrl-C, a closed terminal or a TERM interrupts whatever is going on
    # (a migration, the seeding) as KeyboardInterrupt, so that the embedded servers already started
    # are stopped (Redis below, PostgreSQL at exit): left to their default, SIGHUP and SIGTERM
    # killed `up` and orphaned both.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.default_int_handler)
    started: list[EmbeddedRedis] = []  # the embedded Redis, once started: stopped last, whatever happens
    try:
        return _run(args, started)
    except KeyboardInterrupt:
        _say("stopped before everything had started\n", sys.stderr)
        return 130
    finally:
        for server in started:
            server.stop()


def _run(args: argparse.Namespace, started: list[EmbeddedRedis]) -> int:
    settings = get_settings()
    db_url = database_url(settings)  # starts the embedded PostgreSQL when DATABASE_URL is unset
    broker = settings.redis_url
    if broker is None:
        embedded_redis = EmbeddedRedis(settings.data_dir)
        started.append(embedded_redis)
        broker = embedded_redis.start()
    upgrade(db_url, contract=True)  # every process of this machine's previous run has stopped
    demo = ensure_demo(db_url, settings) if args.demo else None
    from shared.platform import metrics

    metrics.clear()  # samples of a previous run's processes

    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    # SIGHUP: the terminal closed. The children run in sessions of their own and would outlive us.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    env = inherit_urls_env(db_url, broker)
    if not settings.auth_token_keys:  # the children are given DATABASE_URL: they need the keys
        env["AUTH_TOKEN_KEYS"] = secrets.keys_setting()
    text = text_logs(settings)
    prefixer = Prefixer() if text else None
    if text:
        env["LOG_FORMAT"] = "text"
    commands = dict(_children(args, settings.data_dir, quiet=text))

    def start(name: str) -> subprocess.Popen:
        # Own sessions: Ctrl-C reaches only us, and we stop the children in order, gracefully.
        if prefixer is None:
            return subprocess.Popen(commands[name], env=env, start_new_session=True)
        child = subprocess.Popen(commands[name], env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, errors="replace")
        prefixer.follow(name, child)
        return child

    processes = {name: start(name) for name in commands}
    restarts = Restarts()
    base_url = f"http://{args.host}:{args.port}"
    console_url = f"http://{args.host}:{args.console_port}"
    status = 0
    try:
        if not _wait_answering([base_url, console_url], settings, processes, lambda: stopping):
            if stopping:
                return 0
            exited = [f"{name} exited ({process.returncode})" for name, process in processes.items()
                      if process.poll() is not None]
            _say(f"the system did not come up ({', '.join(exited) or 'not every process answered in time'}); "
                 "see the log above\n", sys.stderr)
            return 1
        banner = _banner(base_url, console_url, demo) + "\n"
        prefixer.write(banner) if prefixer else _say(banner, sys.stdout)
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None and restarts.due(name):
                    # A worker that died (a crash, a kill, Redis gone under it) is started again, with
                    # a growing pause if it keeps dying: one part's failure never stops the others.
                    _say(f"{name} exited ({process.returncode}); starting it again\n", sys.stderr)
                    processes[name] = start(name)
            time.sleep(0.3)
    finally:
        _say("stopping...\n", sys.stderr)
        _stop(processes)
    return status
