"""The baseline for the HTTP rows of issue 13: the API's three hottest requests written by hand, with
psycopg and no framework, doing the same SQL: the auth lookup by primary key, the write, the commit
(and, for a create, the Celery message with its in-flight marker, as the API sends it). No
validation beyond what the SQL needs, no metrics, no logs, no rate limit, no ORM. And issue 24's
annotation update: the API's own statement (shared/calls/annotations.py, WRITE), then the commit.

Under the same gunicorn (gevent workers) and load as the API; psycopg is imported lazily, after
the worker patched the standard library, like the API's (api/gunicorn_conf.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import re
import secrets
from urllib.parse import parse_qs

from shared.calls import annotations as statements

_pool: queue.Queue | None = None
POOL_SIZE = 10  # the API's SQLAlchemy pool size per process

UPSERT_FEEDBACK = """INSERT INTO call_feedback AS f (call_sid, account_sid, quality_score, issues)
VALUES (%s, %s, %s, %s) ON CONFLICT (call_sid) DO UPDATE SET quality_score = excluded.quality_score,
    issues = excluded.issues, date_updated = now()
RETURNING f.call_sid, f.quality_score, f.issues, f.date_created, f.date_updated"""
INSERT_SUMMARY = """INSERT INTO feedback_summaries (sid, account_sid, start_date, end_date, include_subaccounts)
VALUES (%s, %s, %s, %s, false) RETURNING sid, status, date_created"""
RECORD_EVENT = "INSERT INTO summary_events (summary_sid, kind, actor) VALUES (%s, 'created', NULL)"
RECORD_CALL = """INSERT INTO calls AS c (sid, account_sid, start_time) VALUES (%s, %s, now())
ON CONFLICT (sid) DO UPDATE SET account_sid = excluded.account_sid, provisional = false,
    start_time = CASE WHEN c.provisional THEN excluded.start_time ELSE least(c.start_time, excluded.start_time) END
WHERE c.provisional OR (c.account_sid = excluded.account_sid AND excluded.start_time < c.start_time)"""



def _psycopg(clause) -> str:
    """An SQLAlchemy text() statement's SQL with psycopg's named placeholders: the very statement."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", getattr(clause, "element", clause).text)


ANNOTATION_WRITE = _psycopg(statements.WRITE)


def _connection():
    global _pool
    if _pool is None:
        import psycopg

        _pool = queue.Queue()
        for _ in range(POOL_SIZE):
            _pool.put(psycopg.connect(os.environ["DATABASE_URL"]))
    return _pool.get()


def _account(cursor, environ) -> str | None:
    sid, _, token = base64.b64decode(environ.get("HTTP_AUTHORIZATION", "")[6:]).decode().partition(":")
    found = cursor.execute("SELECT auth_token_hash FROM accounts WHERE sid = %s", (sid,)).fetchone()
    presented = hashlib.sha256(token.encode()).hexdigest()
    return sid if found and hmac.compare_digest(found[0], presented) else None


def _answer(start_response, status: str, body: dict | None = None):
    data = json.dumps(body, default=str).encode() if body is not None else b""
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def _feedback(cursor, environ, form, path: list[str]):
    account = _account(cursor, environ)
    if account is None:
        return "401 Unauthorized", None
    owner = cursor.execute("SELECT account_sid FROM calls WHERE sid = %s", (path[5],)).fetchone()
    if owner is None or owner[0] != account:
        return "404 Not Found", None
    row = cursor.execute(UPSERT_FEEDBACK, (path[5], account, int(form["QualityScore"][0]), form.get("Issue", []))
                         ).fetchone()
    return "200 OK", dict(zip(("sid", "quality_score", "issues", "date_created", "date_updated"), row))


def _annotation(cursor, environ, form, path: list[str]):
    account = _account(cursor, environ)
    if account is None:
        return "401 Unauthorized", None
    update = {"call_score": int(form["CallScore"][0]), "quality_issues": form["QualityIssues"][0].split(",")}
    values = {"call_sid": path[3], "caller": account, **{name: update.get(name) for name in statements.FIELDS},
              **{f"sets_{name}": name in update for name in statements.FIELDS}}
    row = cursor.execute(ANNOTATION_WRITE, values).fetchone()
    if row is None:
        return "404 Not Found", None
    return "200 OK", {"call_sid": path[3], **dict(zip(("account_sid", *statements.FIELDS), row))}


def _create(cursor, environ, form, path: list[str]):
    account = _account(cursor, environ)
    if account is None:
        return "401 Unauthorized", None
    sid = "FS" + secrets.token_hex(16)
    row = cursor.execute(INSERT_SUMMARY, (sid, account, form["StartDate"][0], form["EndDate"][0])).fetchone()
    cursor.execute(RECORD_EVENT, (sid,))
    return "201 Created", dict(zip(("sid", "status", "date_created"), row))


def _status_callback(cursor, environ, form, path: list[str]):
    from shared.accounts.secrets import decrypt
    from shared.signing import is_valid_signature

    account = form["AccountSid"][0]
    found = cursor.execute("SELECT auth_token_encrypted FROM accounts WHERE sid = %s", (account,)).fetchone()
    url = f"http://{environ['HTTP_HOST']}{environ['PATH_INFO']}"
    if not found or not is_valid_signature(decrypt(found[0]), [url], form, environ.get("HTTP_X_TWILIO_SIGNATURE", "")):
        return "403 Forbidden", None
    cursor.execute(RECORD_CALL, (form["CallSid"][0], account))
    return "204 No Content", None


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = parse_qs(environ["wsgi.input"].read(length).decode())
    path = environ["PATH_INFO"].split("/")
    handler = (_status_callback if path[1] == "twilio" else _annotation if path[1] == "v1" else
               _feedback if path[-1] == "Feedback.json" else _create)
    connection = _connection()
    try:
        with connection.cursor() as cursor:
            status, body = handler(cursor, environ, form, path)
        connection.commit()
    except Exception:
        connection.rollback()
        raise
    finally:
        _pool.put(connection)
    if handler is _create and status.startswith("201"):
        from shared.platform.queue import enqueue_summary

        enqueue_summary(body["sid"])
    return _answer(start_response, status, body)
