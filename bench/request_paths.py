"""The HTTP rows of issue 13: feedback POSTs, summary creates and voice status callbacks per second
under gunicorn (2 gevent processes, wrk -c16), each through the API, the minimal hand-written
psycopg app doing the same SQL (bench/minimal_wsgi.py) and the bare app that does nothing
(bench/bare_wsgi.py), side by side in one run; and issue 24's annotation updates the same way."""

from __future__ import annotations

import base64
from pathlib import Path

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from bench import processes
from bench.dataset import Dataset
from bench.figures import WEB_WORKERS, Row, _post_script, _signed_events_script, _wrk
from shared.models import Call

APPS = (("API", "api.wsgi:application"), ("minimal", "bench.minimal_wsgi:application"),
        ("bare", "bench.bare_wsgi:application"))
TARGET = 0.7  # of the minimal app


def _random_call_script(work: Path, name: str, account, call_sids: list[str], path: str, body: str) -> Path:
    """A wrk script POSTing, as the account, to `path` for a random one of its calls (`sid` in the
    Lua expressions `path` and `body`, `score` a random 1..5)."""
    auth = base64.b64encode(f"{account.sid}:{account.auth_token}".encode()).decode()
    script = work / f"{name}.lua"
    script.write_text(
        f"local sids = {{{', '.join(repr(s) for s in call_sids)}}}\n"
        "local headers = {['Content-Type'] = 'application/x-www-form-urlencoded', "
        f"['Authorization'] = 'Basic {auth}'}}\n"
        "function request()\n"
        "  local sid = sids[math.random(#sids)]\n"
        "  local score = math.random(5)\n"
        f"  return wrk.format('POST', {path}, headers, {body})\n"
        "end\n")
    return script


def _feedback_script(work: Path, account, call_sids: list[str]) -> Path:
    """Feedback on a random call of the account: new entries, then replacements."""
    return _random_call_script(work, "feedback", account, call_sids,
                               f"'/2010-04-01/Accounts/{account.sid}/Calls/' .. sid .. '/Feedback.json'",
                               "'QualityScore=' .. score .. (score < 3 and '&Issue=dropped-call' or '')")


def _annotation_script(work: Path, account, call_sids: list[str]) -> Path:
    """An annotation update of a random call of the account: a score and quality issues each time (so
    each writes the call's feedback entry too), the low scores with issues that map to feedback issues."""
    return _random_call_script(work, "annotation", account, call_sids, "'/v1/Voice/' .. sid .. '/Annotation'",
                               "'CallScore=' .. score .. '&QualityIssues=' .. (score < 3 and 'latency,echo' or "
                               "'no_quality_issue')")


def _three(work: Path, seconds: int, name: str, path: str, make_script) -> dict[str, tuple[float, int]]:
    results = {}
    for label, app in APPS:
        child, base = processes.gunicorn(app, work, workers=WEB_WORKERS, name=f"gunicorn-{name}-{label}")
        try:
            results[label] = _wrk(base + path, make_script(base), seconds, 16)
        finally:
            child.stop()
    return results


def _row(figure: str, results: dict[str, tuple[float, int]]) -> Row:
    (ours, errors), (minimal, minimal_errors), (bare, _) = results["API"], results["minimal"], results["bare"]
    ratio = ours / minimal
    return Row(figure, f"{ours:,.0f}/s ({errors} errors)",
               f"minimal psycopg app: {minimal:,.0f}/s ({minimal_errors} errors); bare WSGI: {bare:,.0f}/s",
               f"{ratio:.2f} (of bare: {ours / bare:.2f})", f"≥ {TARGET} of the minimal app",
               ratio >= TARGET and errors == 0)


def feedback_posts(engine: Engine, data: Dataset, work: Path, seconds: int) -> Row:
    account = data.small[2]
    with Session(engine) as session:
        sids = list(session.scalars(select(Call.sid).where(Call.account_sid == account.sid)))
    results = _three(work, seconds, "feedback", "/", lambda base: _feedback_script(work, account, sids))
    return _row(f"feedback POSTs per second (auth, call lookup, upsert) under gunicorn, {WEB_WORKERS} processes",
                results)


def annotation_updates(engine: Engine, data: Dataset, work: Path, seconds: int) -> Row:
    account = data.small[2]  # the feedback row's account: both write the entries of its calls
    with Session(engine) as session:
        sids = list(session.scalars(select(Call.sid).where(Call.account_sid == account.sid)))
    results = _three(work, seconds, "annotation", "/", lambda base: _annotation_script(work, account, sids))
    return _row("annotation updates per second (auth; one statement: call locked, annotation merged, entry written) "
                f"under gunicorn, {WEB_WORKERS} processes", results)


def creates(engine: Engine, data: Dataset, work: Path, seconds: int) -> Row:
    account = data.small[3]
    path = f"/2010-04-01/Accounts/{account.sid}/Calls/FeedbackSummary.json"
    results = _three(work, seconds, "create", path,
                     lambda base: _post_script(work, account, "StartDate=2024-01-01&EndDate=2024-01-31"))
    with engine.begin() as connection:  # the bench's summaries are not for computing
        connection.execute(text("DELETE FROM feedback_summaries WHERE account_sid = :a"), {"a": account.sid})
    from shared.platform.queue import get_redis

    get_redis().delete("summaries")
    return _row(f"summary creates per second (auth, validate, insert, enqueue) under gunicorn, {WEB_WORKERS} "
                "processes", results)


def status_callbacks(engine: Engine, data: Dataset, work: Path, seconds: int) -> Row:
    account, sids = data.small[4], []

    def script(base: str) -> Path:
        made_script, made = _signed_events_script(work, base + "/twilio/voice/status", account, 3000 * seconds)
        sids.extend(made)
        return made_script

    results = _three(work, seconds, "hook", "/twilio/voice/status", script)
    with engine.begin() as connection:  # the bench's calls are not part of the dataset
        connection.execute(text("DELETE FROM calls WHERE sid = ANY(:s)"), {"s": sids})
    return _row(f"voice status callbacks ingested per second under gunicorn, {WEB_WORKERS} processes", results)
