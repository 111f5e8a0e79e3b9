"""The console row (issue 23): each page's time, p95 of REQUESTS sequential requests after one warm-up,
on a keep-alive loopback connection to the console under gunicorn (the Procfile's `console`, its own
configuration), signed in through the trusted proxy's header, with bench/console_data.py's dataset
stored. The row is the worst page's p95; its notes, every page's figures. Measured against the
console's /healthz on the same connection (gunicorn and the client, no database, no template)."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import requests
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bench import console_data, processes
from bench.figures import Row, _ms, _percentile
from shared.operator import users
from shared.platform.db import lift_statement_timeout

REQUESTS = 50
TARGET_S = 0.300
WORKERS = 2  # the Procfile's console (CONSOLE_PROCESSES)
USER, HEADER = "bench", "X-Bench-User"
NEXT_LINK = re.compile(r'<a rel="next" href="([^"]+)"')


def _subjects(engine: Engine, data: console_data.ConsoleData) -> tuple[str, str, str]:
    """The hosts with the most and the fewest deliveries, and the summary whose timeline is longest
    (its delivery's attempts), the most recent of those."""
    with engine.connect() as connection:
        lift_statement_timeout(connection)
        hosts = [host for (host,) in connection.execute(text(
            "SELECT host FROM callback_deliveries WHERE account_sid = ANY(:a) GROUP BY host "
            "ORDER BY count(*) DESC, host"), {"a": data.accounts})]
        sid = connection.execute(text(
            "SELECT summary_sid FROM callback_deliveries WHERE account_sid = ANY(:a) "
            "ORDER BY attempts DESC, date_updated DESC LIMIT 1"), {"a": data.accounts}).scalar_one()
    return hosts[0], hosts[-1], sid


def _viewer(engine: Engine) -> None:
    with Session(engine) as session:
        if users.find(session, USER) is None:
            users.create(session, USER, "viewer", None)  # no password: the proxy's header only
            session.commit()


def _get(session: requests.Session, url: str) -> tuple[float, requests.Response]:
    began = time.perf_counter()
    response = session.get(url, allow_redirects=False, timeout=60)
    elapsed = time.perf_counter() - began
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:300]!r}")
    return elapsed, response


def _timed(session: requests.Session, url: str) -> dict:
    first, response = _get(session, url)  # the warm-up: also fills the charts' hour cache, for the 1st page
    samples = [_get(session, url)[0] for _ in range(REQUESTS)]
    return {"first": first, "p50": _percentile(samples, 50), "p95": _percentile(samples, 95), "max": max(samples),
            "kb": len(response.content) / 1024}


def _notes(results: dict[str, dict], healthz: dict, counts: dict[str, int]) -> str:
    lines = [f"Console pages, {REQUESTS} sequential requests each after one warm-up (dataset: "
             f"{counts['summaries']:,} summaries, {counts['events']:,} events, {counts['deliveries']:,} deliveries, "
             f"{counts['attempts']:,} callback attempts):", "",
             "| page | p50 | p95 | max | first request | page size |", "|---|---|---|---|---|---|"]
    for name, figures in [*results.items(), ("/healthz (no database)", healthz)]:
        flag = " **over**" if figures["p95"] > TARGET_S and name in results else ""
        lines.append(f"| `{name}` | {_ms(figures['p50'])} | {_ms(figures['p95'])}{flag} | {_ms(figures['max'])} | "
                     f"{_ms(figures['first'])} | {figures['kb']:.0f} KB |")
    return "\n".join(lines)


def console_pages(engine: Engine, work: Path, summaries: int, attempts: int, log=print) -> Row:
    data = console_data.ensure(engine, summaries, attempts, log)
    counts = console_data.counts(engine, data.accounts)
    busiest_host, quietest_host, sid = _subjects(engine, data)
    _viewer(engine)
    with engine.begin() as connection:  # the first overview computes its hours, as after a deploy
        connection.execute(text("DELETE FROM console_chart_hours"))
    env = {"CONSOLE_TRUSTED_USER_HEADER": HEADER, "CONSOLE_TRUSTED_PROXIES": "127.0.0.1/32"}
    child, base = processes.console(work, WORKERS, "console", env)
    try:
        session = requests.Session()
        session.headers[HEADER] = USER
        _, first_page = _get(session, base + "/summaries")
        older = NEXT_LINK.search(first_page.text)
        if older is None:
            raise RuntimeError("the summaries page has no Older link")
        pages = {
            "/": "/", "/?range=7d": "/?range=7d", "/summaries": "/summaries",
            "/summaries?status=failed": "/summaries?status=failed",
            "/summaries?host=<busiest host>": f"/summaries?host={busiest_host}",
            # Not in the list: the same page's plan walks the summaries newest first until it
            # has found a page of the host's, so a host with few deliveries costs more than a busy one.
            "/summaries?host=<quietest host>": f"/summaries?host={quietest_host}",
            "/summaries/<sid> (longest timeline)": f"/summaries/{sid}",
            "/deliveries": "/deliveries", "/deliveries?status=failed": "/deliveries?status=failed",
            "/destinations": "/destinations", "/accounts": "/accounts",
            "/accounts/<busiest account>": f"/accounts/{data.accounts[0]}", "/purge?days=30": "/purge?days=30",
            "/summaries, page 2 (Older)": html.unescape(older.group(1)),
        }
        results = {}
        for name, path in pages.items():
            results[name] = _timed(session, base + path)
            log(f"  {name}: p95 {_ms(results[name]['p95'])} (first {_ms(results[name]['first'])})")
        healthz = _timed(session, base + "/healthz")
    finally:
        child.stop()
    worst = max(results, key=lambda name: results[name]["p95"])
    worst_s = results[worst]["p95"]
    return Row(f"console pages, each page's time p95 of {REQUESTS} requests, worst of {len(pages)} "
               f"({counts['summaries'] / 1e6:g}M summaries, {counts['attempts'] / 1e6:.1f}M callback attempts; "
               f"gunicorn, {WORKERS} processes)",
               f"`{worst}` {_ms(worst_s)}", f"console /healthz: {_ms(healthz['p95'])}",
               f"{worst_s / healthz['p95']:.0f}×", "≤ 300 ms per page", worst_s <= TARGET_S,
               _notes(results, healthz, counts))
