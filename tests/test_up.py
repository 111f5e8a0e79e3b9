"""`summaries up --demo` on a fresh data directory, as `make run` does on a fresh machine: embedded
PostgreSQL and Redis, the banner's curl creates a summary that a worker completes with exactly the
independent computation's numbers, and Ctrl-C (SIGINT) stops every process."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import urllib.request
from base64 import b64encode

import pytest
from sqlalchemy import create_engine

from shared.platform.db import sqlalchemy_url
from tests.processes import ROOT, summaries_cli, wait_for
from tests.reference import AGGREGATE_FIELDS, expected_for
from tests.support import free_port

pytestmark = pytest.mark.slow


def _get(url: str, sid: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + b64encode(f"{sid}:{token}".encode()).decode()})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def ctrl_c(up: subprocess.Popen) -> int:
    """What Ctrl-C in the terminal sends (SIGINT to the foreground group); `up`'s exit status."""
    os.killpg(up.pid, signal.SIGINT)
    try:
        return up.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
        raise


def _console_page(base_url: str, name: str, password: str, path: str) -> str:
    """Sign in to the console through its form, as a browser would (cookie and CSRF token), then GET path."""
    import http.cookiejar
    import urllib.parse

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = opener.open(f"{base_url}/sign-in", timeout=10).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"name": name, "password": password, "csrf": csrf, "next": path}).encode()
    with opener.open(f"{base_url}/sign-in", data=data, timeout=10) as response:  # 303, followed
        assert response.url == f"{base_url}{path}"
        return response.read().decode()


def test_up_on_a_fresh_machine_serves_the_printed_curl_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SUMMARIES_DATA_DIR")}
    port = free_port()
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "--data-dir", str(tmp_path), "up", "--demo",
                           "--port", str(port), "--console-port", str(free_port())], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(up.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("Ctrl-C stops everything" in line for line in lines) or up.poll() is not None,
                 180, 0.2, "the banner")
        output = "".join(lines)
        assert up.poll() is None, output
        # Not a terminal: the processes' own JSON lines, as the Procfile's write them.
        assert any(line.startswith('{"time": ') for line in lines), output
        sid = re.search(r"demo account\s+(AC[0-9a-f]{32})", output).group(1)
        token = re.search(r"auth token\s+([0-9a-f]{32})", output).group(1)
        curl = output[output.index("curl -s -u"):].split("\n")
        command = (curl[0].rstrip("\\") + curl[1]).strip()
        assert f"http://127.0.0.1:{port}/" in command

        created = json.loads(subprocess.run(shlex.split(command), capture_output=True, text=True, check=True,
                                            timeout=30).stdout)
        assert created["status"] == "queued" and created["include_subaccounts"] is True
        url = f"http://127.0.0.1:{port}/2010-04-01/Accounts/{sid}/Calls/FeedbackSummary/{created['sid']}.json"
        done = wait_for(lambda: (s := _get(url, sid, token))["status"] in ("completed", "failed") and s, 60, 0.2,
                        "the summary to complete")
        assert done["status"] == "completed", "".join(lines)
        assert done["call_count"] > 20_000 * 0.9  # the demo account and its subaccount, 30 days of calls

        # The embedded server's socket directory is the fifth line of its postmaster.pid.
        socket_dir = (tmp_path / "pg" / "postmaster.pid").read_text().splitlines()[4]
        engine = create_engine(sqlalchemy_url(f"postgresql://postgres@/postgres?host={socket_dir}"))
        try:
            expected = expected_for(engine, sid, True, dt.date.fromisoformat(done["start_date"]),
                                    dt.date.fromisoformat(done["end_date"]))
        finally:
            engine.dispose()
        assert {name: done[name] for name in AGGREGATE_FIELDS} == expected

        # The console, from the banner alone: its address and the demo operator's password sign in,
        # and the demo's failing destination is there with its open circuit.
        console = re.search(r"The operators' console is at (http://\S+)", output).group(1)
        password = re.search(r"sign in as\s+demo, password (\S+) ", output).group(1)
        destinations = _console_page(console, "demo", password, "/destinations")
        assert "hooks.failing-customer.example" in destinations and ">open<" in destinations

        # Another command on this machine, given no DATABASE_URL, uses the servers `up` runs: it
        # finds the summary, and starts no server of its own.
        jobs = summaries_cli("--data-dir", str(tmp_path), "jobs", "--json", env=env)
        assert jobs.returncode == 0, jobs.stderr
        assert created["sid"] in {job["sid"] for job in json.loads(jobs.stdout)}

        # A worker that dies is started again; the next summary completes without anyone stepping in.
        def worker_pids() -> set[str]:
            """This `up`'s summaries worker's main process: its child, the leader of its own process group
            (another `up` on the machine, a test's or a person's, has its own)."""
            table = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,pgid=,args="], capture_output=True,
                                   text=True).stdout
            return {pid for pid, ppid, pgid, args in (line.split(None, 3) for line in table.splitlines())
                    if pid == pgid and ppid == str(up.pid) and "worker.celery_app worker" in args
                    and "summaries@" in args}

        (killed,) = worker_pids()
        os.killpg(int(killed), signal.SIGKILL)
        wait_for(lambda: worker_pids() - {killed}, 30, 0.2, "the worker to be started again")
        again = json.loads(subprocess.run(shlex.split(command), capture_output=True, text=True, check=True,
                                          timeout=30).stdout)
        url = url.replace(created["sid"], again["sid"])
        wait_for(lambda: _get(url, sid, token)["status"] == "completed", 60, 0.2, "a summary after the restart")
        assert up.poll() is None
        wait_for(lambda: "worker exited" in "".join(lines), 10, 0.2, "up to say it restarted the worker")
    finally:
        code = ctrl_c(up)
    reader.join(timeout=5)
    output = "".join(lines)
    assert code == 0, output
    # Nothing of ours is left running: every child was in the process group we signalled or stopped by up.
    def running(pattern: str) -> bool:
        return subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0

    wait_for(lambda: not running(str(tmp_path / "celerybeat-schedule")) and not running(f"127.0.0.1:{port}"), 10,
             what="every child of summaries up to be gone")


PREFIXED = re.compile(r"^(web|console|worker|callbacks|scheduler) +\| \d\d:\d\d:\d\d \S")


def test_up_at_a_terminal_prints_one_prefixed_line_per_event_and_the_banner_last(tmp_path):
    """What `make run` shows a person: no JSON, no Celery banner or root warning, each line named by
    its process; the banner once all four answer; then the requests and tasks, one line each."""
    import pty

    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "SUMMARIES_DATA_DIR", "LOG_FORMAT")}
    port = free_port()
    leader, terminal = pty.openpty()
    up = subprocess.Popen([sys.executable, "-m", "cli.main", "--data-dir", str(tmp_path), "up", "--demo",
                           "--port", str(port), "--console-port", str(free_port())], cwd=ROOT, env=env, stdin=terminal, stdout=terminal,
                          stderr=terminal, start_new_session=True)
    os.close(terminal)
    screen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: every writer of the terminal has closed it
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def text() -> str:
        return b"".join(screen).decode(errors="replace").replace("\r\n", "\n")

    try:
        wait_for(lambda: "The logs follow." in text() or up.poll() is not None, 180, 0.2, "the banner")
        assert up.poll() is None, text()
        sid = re.search(r"demo account\s+(AC[0-9a-f]{32})", text()).group(1)
        token = re.search(r"auth token\s+([0-9a-f]{32})", text()).group(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/2010-04-01/Accounts/{sid}/Calls/FeedbackSummary.json",
            data=b"StartDate=2024-01-01&EndDate=2024-01-31",
            headers={"Authorization": "Basic " + b64encode(f"{sid}:{token}".encode()).decode()})
        with urllib.request.urlopen(request, timeout=10) as response:
            created = json.loads(response.read())["sid"]
        wait_for(lambda: f"summary completed account_sid={sid} summary_sid={created}" in text(), 60, 0.2,
                 "the worker's line for the summary")
    finally:
        code = ctrl_c(up)
    reader.join(timeout=5)
    os.close(leader)
    output = text()
    assert code == 0, output
    lines = output.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("Call Feedback Summaries is up at")))
    end = lines.index("Ctrl-C stops everything. The logs follow.")
    before, after = [line for line in lines[:start] if line.strip()], [line for line in lines[end + 1:] if line.strip()]

    assert before[0].startswith("seeding the demo account")
    for line in before[1:]:
        assert PREFIXED.match(line), line
    for process, ready in [("web", "Listening at: "), ("worker", "summaries@"), ("callbacks", "callbacks@"),
                           ("scheduler", "beat: Starting")]:
        assert any(line.startswith(process) and ready in line for line in before), (process, before)
    assert not any(line.lstrip().startswith("{") for line in lines), output  # no JSON
    for noise in ("celery beat v", "-------------- ", "[tasks]", "SecurityWarning", "superuser", "/healthz",
                  "Sending due task", "mingle", "Traceback", "Connection to broker lost"):
        assert noise not in output, noise

    stopping = after.index("stopping...")
    logs = after[:stopping]
    for line in logs:
        assert PREFIXED.match(line), line
    for line in after[stopping + 1:]:  # the processes' goodbyes (Celery prints "Warm shutdown" untimed)
        assert re.match(r"^(web|console|worker|callbacks|scheduler) +\| \S", line), line
    assert any(line.startswith("web ") and "request method=POST " in line and "status=201" in line and
               f"summary_sid={created}" in line for line in logs), logs
