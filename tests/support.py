"""Helpers for the tests: an in-process WSGI client, account/call factories, table snapshots."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import io
import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from cli.accounts import create_account
from shared.accounts.sids import CALL, new_sid
from shared.models import Account, Call, CallFeedback
from shared.platform.embedded import free_port  # noqa: F401  (the tests take it from here)

TABLES = ("console_host_hours", "console_chart_hours", "console_sign_in_failures", "console_users", "account_activity", "summary_events", "daily_calls", "daily_feedback", "calls_rollup_deltas", "feedback_rollup_deltas", "callback_attempts", "callback_deliveries", "idempotency_keys", "feedback_summaries", "call_annotations", "call_feedback", "calls", "accounts")

FORM = {"StartDate": "2024-01-01", "EndDate": "2024-01-31"}  # a create's form: January 2024


def reset_caches() -> None:
    """Every setting, engine, client and key this process cached, read again from the environment
    next time: the one way a test changes the process's configuration (the settings_env fixture)."""
    from shared.accounts import secrets
    from shared.platform import db, queue
    from shared.platform.config import get_settings

    for cached in (get_settings, db.get_engine, db.get_sessionmaker, queue.get_celery, queue.get_redis,
                   secrets.cipher):
        cached.cache_clear()


DEBIAN_PROGRAMS = dict(line.split()[:2] for line in (Path(__file__).parent / "debian-programs.txt").read_text().splitlines()
                       if line.strip() and not line.startswith("#"))


def debian_program(program: str) -> str | None:
    """Where a program of tests/debian-programs.txt is (root's PATH has /usr/sbin, others' may not)."""
    assert program in DEBIAN_PROGRAMS, f"add {program} to tests/debian-programs.txt"
    return next((path for path in (shutil.which(program), f"/usr/sbin/{program}", f"/usr/bin/{program}")
                 if path and Path(path).is_file()), None)


def _missing(program: str) -> str:
    return f"{program} is not installed: apt-get install {DEBIAN_PROGRAMS[program]} (Debian)"


def needs_debian_program(program: str) -> pytest.MarkDecorator:
    """Skip unless the program is there, naming the package that brings it (.ci/run installs it, so
    CI never skips these: .ci/check-skips fails the run if it does)."""
    return pytest.mark.skipif(debian_program(program) is None, reason=_missing(program))


def require_debian_program(program: str) -> str:
    """The program's path, or skip the test (or the fixture's tests) as needs_debian_program does."""
    path = debian_program(program)
    if path is None:
        pytest.skip(_missing(program))
    return path


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


def basic(sid: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()


class WsgiClient:
    """Builds a WSGI environ and calls the app in-process, as falcon.testing does."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, path: str, *, form=None, body: bytes | None = None, auth=None,
                headers: dict[str, str] | None = None, query: str = "", stream=None) -> Result:
        if form is not None:
            body = urlencode(form, doseq=True).encode()
        environ = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "localhost",
            "SERVER_PORT": "80", "wsgi.url_scheme": "http", "wsgi.input": stream or io.BytesIO(body or b""),
            "CONTENT_LENGTH": str(len(body)) if body is not None else "",
        }
        if body is not None and form is not None:
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if auth is not None:
            environ["HTTP_AUTHORIZATION"] = auth if isinstance(auth, str) else basic(*auth)
        for name, value in (headers or {}).items():
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
        captured = {}

        def start_response(status, response_headers):
            captured["status"] = int(status.split()[0])
            captured["headers"] = dict(response_headers)

        chunks = self.app(environ, start_response)
        return Result(captured["status"], captured["headers"], b"".join(chunks))

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self.request("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)


def make_account(engine: Engine, parent: Account | None = None, name: str | None = None) -> Account:
    with Session(engine, expire_on_commit=False) as session:
        account = create_account(session, name, parent.sid if parent else None)
        session.commit()
    return account


def make_calls(engine: Engine, account: Account, start_times: list[dt.datetime]) -> list[str]:
    sids = [new_sid(CALL) for _ in start_times]
    with Session(engine) as session:
        session.add_all(Call(sid=sid, account_sid=account.sid, start_time=start)
                        for sid, start in zip(sids, start_times))
        session.commit()
    return sids


def add_feedback(engine: Engine, call_sid: str, account: Account, score: int, issues: list[str],
                 given_at: dt.datetime) -> None:
    with Session(engine) as session:
        session.add(CallFeedback(call_sid=call_sid, account_sid=account.sid, quality_score=score, issues=issues,
                                 date_created=given_at, date_updated=given_at))
        session.commit()


def snapshot(engine: Engine, redis_client=None) -> dict:
    """Every table's rows (and the queue lengths): equal before and after means nothing was written."""
    with engine.connect() as connection:
        state = {table: sorted(map(tuple, connection.execute(text(f"SELECT * FROM {table}"))), key=repr)
                 for table in TABLES}
    if redis_client is not None:
        state["redis"] = sorted(redis_client.keys())
        state["queued"] = redis_client.llen("summaries")
    return state


def summaries_path(account_sid: str, sid: str | None = None) -> str:
    base = f"/2010-04-01/Accounts/{account_sid}/Calls/FeedbackSummary"
    return f"{base}/{sid}.json" if sid else f"{base}.json"


def feedback_path(account_sid: str, call_sid: str) -> str:
    return f"/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}/Feedback.json"


def queued_messages(redis_client) -> list[dict]:
    """The compute messages waiting in the summaries queue, decoded from kombu's envelope."""
    messages = []
    for raw in redis_client.lrange("summaries", 0, -1):
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        messages.append({"task": envelope["headers"]["task"], "args": body[0]})
    return messages


@contextlib.contextmanager
def lock_held(engine, statement: str, for_s: float | None = None):
    """`statement` (a LOCK TABLE) held by a transaction on another connection until the block ends,
    or for `for_s` seconds if that comes first."""
    locked, release = threading.Event(), threading.Event()

    def hold():
        with engine.connect() as connection, connection.begin():
            connection.execute(text(statement))
            locked.set()
            release.wait(for_s)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert locked.wait(10), "the lock was not taken"
    try:
        yield
    finally:
        release.set()
        thread.join(10)


# --- summaries, in the states the tests need, through their owner (shared/summaries/lifecycle.py) ---

def summary_in(engine: Engine, account: Account, status: str = "queued", reason: str = "boom",
               start: dt.date = dt.date(2024, 1, 1), end: dt.date = dt.date(2024, 1, 31), **params) -> str:
    """A summary created and moved to `status` as the API and a worker would (queued -> in-progress
    -> completed or failed, each move recorded in its timeline); its sid."""
    from shared.accounts.sids import SUMMARY
    from shared.summaries import lifecycle

    sid = new_sid(SUMMARY)
    values = {"include_subaccounts": False, "status_callback": None, "status_callback_method": "POST", **params}
    with engine.begin() as connection:
        lifecycle.create(connection, sid, account.sid, "RQtest", start_date=start, end_date=end, **values)
        if status != "queued":
            lifecycle.claim(connection, sid, "test-worker", 300)
        if status == "completed":
            lifecycle.complete(connection, sid, "test-worker", {
                "call_count": 0, "call_feedback_count": 0, "quality_score_average": None,
                "quality_score_median": None, "quality_score_standard_deviation": None, "issues": []})
        elif status == "failed":
            lifecycle.fail(connection, sid, "test-worker", reason)
    return sid


def backdate(engine: Engine, table: str, sids: list[str], days: float = 0, column: str = "date_updated",
             key: str = "sid") -> None:
    """The tests' one time machine: as if these rows were last changed `days` ago (no code path of the
    service writes the past, so the tests do, here only). A summary last changed then was created no
    later (the purge's count relies on it)."""
    assert table in ("feedback_summaries", "callback_deliveries") and column in ("date_updated", "lease_expires_at")
    also = (", date_created = LEAST(date_created, now() - make_interval(secs => :s))"
            if (table, column) == ("feedback_summaries", "date_updated") else "")
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {table} SET {column} = now() - make_interval(secs => :s){also} "
                                f"WHERE {key} = ANY(:sids)"), {"s": days * 86400, "sids": list(sids)})


def post_summary(client, account: Account, form: dict | None = None, **kwargs) -> Result:
    """POST a create as the account itself (FORM unless given): the API's answer."""
    return client.post(summaries_path(account.sid), form=FORM if form is None else form,
                       auth=(account.sid, account.auth_token), **kwargs)
