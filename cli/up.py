"""`summaries up`: the whole system in the foreground; Ctrl-C stops every part cleanly."""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import subprocess
import sys
import time
import urllib.request

from sqlalchemy import select
from sqlalchemy.orm import Session

from cli import processes
from cli.accounts import create_account
from cli.migrate import upgrade
from cli.processes import python_m
from cli.seed import seed
from shared.accounts import secrets
from shared.models import Account
from shared.platform.config import get_settings
from shared.platform.db import database_url, make_engine
from shared.platform.embedded import EmbeddedRedis, inherit_urls_env

DEMO_NAME = "Demo account"
DEMO_DAYS = 30
STOP_TIMEOUT_S = 20
RESTART_MAX_S, RESTART_RESET_S = 30.0, 60.0


def ensure_demo(url: str) -> Account:
    """The demo account (and a subaccount), created and seeded the first time only."""
    engine = make_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        demo = session.scalar(select(Account).where(Account.friendly_name == DEMO_NAME,
                                                    Account.parent_sid.is_(None)))
        if demo is not None:
            return demo
        demo = create_account(session, DEMO_NAME)
        sub = create_account(session, "Demo subaccount", demo.sid)
        session.commit()
    print("seeding the demo account (20,000 calls and a subaccount with 5,000, over 30 days)...", flush=True)
    with engine.connect() as connection:
        seed(connection, demo.sid, 20_000, DEMO_DAYS)
        seed(connection, sub.sid, 5_000, DEMO_DAYS)
    engine.dispose()
    return demo


def _children(args: argparse.Namespace, data_dir) -> list[tuple[str, list[str]]]:
    """The Procfile's processes (cli/processes.py), on this machine, logging at INFO."""
    info = ["--loglevel", "INFO"]
    return [
        ("web", python_m([*processes.web(f"{args.host}:{args.port}", args.web_processes), "--graceful-timeout", "10"])),
        ("worker", python_m([*processes.worker("worker", args.worker_concurrency), *info])),
        ("callbacks", python_m([*processes.worker("callbacks"), *info])),
        ("scheduler", python_m([*processes.scheduler(str(data_dir / "celerybeat-schedule")), *info])),
    ]


def _wait_healthy(base_url: str, processes: dict, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes.values()):
            return False
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            time.sleep(0.2)
    return False


def _banner(base_url: str, demo: Account | None) -> str:
    lines = [f"\nCall Feedback Summaries is up at {base_url}"]
    if demo is not None:
        end = dt.date.today()
        start = end - dt.timedelta(days=DEMO_DAYS)
        path = f"/2010-04-01/Accounts/{demo.sid}/Calls/FeedbackSummary"
        lines += [
            f"  demo account  {demo.sid}",
            f"  auth token    {demo.auth_token}",
            "",
            "Create a summary of the last 30 days, the subaccount included:",
            f"  curl -s -u {demo.sid}:{demo.auth_token} -d StartDate={start} -d EndDate={end} \\",
            f"       -d IncludeSubaccounts=true {base_url}{path}.json",
            "Fetch it (use the sid the create printed):",
            f"  curl -s -u {demo.sid}:{demo.auth_token} {base_url}{path}/FS....json",
        ]
    lines += ["", "Ctrl-C stops everything.\n"]
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
            print(f"{name} did not stop in {STOP_TIMEOUT_S}s; killing it", file=sys.stderr)
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
    settings = get_settings()
    embedded_redis = None
    db_url = database_url(settings)  # starts the embedded PostgreSQL when DATABASE_URL is unset
    broker = settings.redis_url
    if broker is None:
        embedded_redis = EmbeddedRedis(settings.data_dir)
        broker = embedded_redis.start()
    upgrade(db_url, contract=True)  # every process of this machine's previous run has stopped
    demo = ensure_demo(db_url) if args.demo else None
    from shared.platform import metrics

    metrics.clear()  # samples of a previous run's processes

    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    env = inherit_urls_env(db_url, broker)
    if not settings.auth_token_keys:  # the children are given DATABASE_URL: they need the keys
        env["AUTH_TOKEN_KEYS"] = secrets.keys_setting()
    commands = dict(_children(args, settings.data_dir))
    # Own sessions: Ctrl-C reaches only us, and we stop the children in order, gracefully.
    processes = {name: subprocess.Popen(command, env=env, start_new_session=True) for name, command in commands.items()}
    restarts = Restarts()
    base_url = f"http://{args.host}:{args.port}"
    status = 0
    try:
        if not _wait_healthy(base_url, processes):
            print("the API did not come up; see the log above", file=sys.stderr)
            return 1
        print(_banner(base_url, demo), flush=True)
        while not stopping:
            for name, process in processes.items():
                if process.poll() is not None and restarts.due(name):
                    # A worker that died (a crash, a kill, Redis gone under it) is started again, with
                    # a growing pause if it keeps dying: one part's failure never stops the others.
                    print(f"{name} exited ({process.returncode}); starting it again", file=sys.stderr, flush=True)
                    processes[name] = subprocess.Popen(commands[name], env=env, start_new_session=True)
            time.sleep(0.3)
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        _stop(processes)
        if embedded_redis is not None:
            embedded_redis.stop()
    return status
