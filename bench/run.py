"""`summaries bench [--quick]`: build or reuse the dataset, measure every row, print one table."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import tempfile
from pathlib import Path

from bench import console_pages, contention, figures, loading, request_paths
from bench.dataset import ensure
from cli.migrate import upgrade
from shared.platform import queue
from shared.platform.config import get_settings
from shared.platform.db import database_url, get_engine
from shared.platform.embedded import EmbeddedRedis

SIZES = {  # big account's calls, small accounts, seconds of load, summaries and callbacks per batch, import rows;
    # the console row's summaries and callback attempts (bench/console_data.py)
    "full": dict(big_calls=10_000_000, small=20, seconds=10, batch=2000, rows=1_000_000,
                 console_summaries=1_000_000, console_attempts=5_000_000),
    "quick": dict(big_calls=500_000, small=5, seconds=3, batch=300, rows=100_000,
                  console_summaries=100_000, console_attempts=500_000),
}


ROWS = ("sql", "creates", "summaries", "latency", "callbacks", "import", "memory", "feedback-writes",
        "call-ingest", "http-feedback", "http-annotations", "http-creates", "http-status", "console")
WRK_ROWS = {"creates", "memory", "callbacks", "http-feedback", "http-annotations", "http-creates", "http-status"}
OWN_DATA_ROWS = {"console"}  # rows that need none of the calls dataset (they build their own)


def table(rows: list[figures.Row]) -> str:
    lines = ["| figure | ours | measured against | ratio | target | met |", "|---|---|---|---|---|---|"]
    for row in rows:
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(f"| {row.figure} | {row.ours} | {row.against} | {row.ratio} | {row.target} | {met} |")
    return "\n".join(lines)


def machine() -> str:
    import psutil

    return (f"{platform.node()}: {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
            f"{platform.platform()}, Python {platform.python_version()}")


def wanted_rows(args: argparse.Namespace) -> set[str]:
    wanted = set(args.only.split(",")) if args.only else set(ROWS)
    unknown = wanted - set(ROWS)
    if unknown:
        raise SystemExit(f"python -m bench: no such row: {', '.join(sorted(unknown))} (rows: {', '.join(ROWS)})")
    return wanted


def main(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None and wanted_rows(args) & WRK_ROWS:
        print("summaries bench needs wrk (Debian: apt-get install wrk); `make bench` installs it")
        return 2
    size = SIZES["quick" if args.quick else "full"]
    if not (os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL")):
        os.environ["SUMMARIES_EMBEDDED"] = "1"  # the bench runs its own servers where none are named
    settings = get_settings()
    url = database_url(settings)  # starts the embedded PostgreSQL when DATABASE_URL is unset
    embedded_redis = None
    if settings.redis_url is None:
        embedded_redis = EmbeddedRedis(settings.data_dir)
        broker = embedded_redis.start()
    else:
        broker = settings.redis_url
    upgrade(url)
    if not settings.auth_token_keys:  # given DATABASE_URL below, every process needs the keys, as `summaries up`'s
        from shared.accounts.secrets import keys_setting

        os.environ["AUTH_TOKEN_KEYS"] = keys_setting()  # the data directory's key
    os.environ.update(DATABASE_URL=url, REDIS_URL=broker)  # for the processes the bench starts
    # The limiters still run (their Redis call is part of every create, post and update) but must not
    # stop the load: the feedback one (200/second by default) answered most of the posts with 429.
    os.environ["CREATE_RATE_LIMIT"] = "1000000/second"
    os.environ["FEEDBACK_RATE_LIMIT"] = "1000000/second"
    get_settings.cache_clear()
    queue.get_redis.cache_clear()
    queue.get_celery.cache_clear()
    try:
        return _measure(args, size, url)
    finally:
        if embedded_redis is not None and embedded_redis.process is not None:
            embedded_redis.stop()


def _measure(args: argparse.Namespace, size: dict, url: str) -> int:
    engine = get_engine()
    with engine.connect() as connection:
        server = connection.exec_driver_sql("SHOW server_version").scalar()
    wanted = wanted_rows(args)
    data = None
    if wanted - OWN_DATA_ROWS:
        data = ensure(engine, size["big_calls"], size["small"])
        contention.fold_all()  # as the scheduler does every second: seeding leaves its deltas pending
    work = Path(tempfile.mkdtemp(prefix="cfs-bench-"))
    print(f"measuring ({'quick' if args.quick else 'full'} size; logs in {work})...", flush=True)
    rows, api_mb, worker_mb = [], 0.0, 0.0

    def measure(name, run):
        if name in wanted:
            rows.append(run())
            print(table(rows[-1:]).splitlines()[-1], flush=True)

    measure("sql", lambda: figures.summary_sql(engine, data))
    if "creates" in wanted or "memory" in wanted:
        row, api_mb = figures.creates_per_second(engine, data, work, size["seconds"])
        measure("creates", lambda: row)
    if "summaries" in wanted or "memory" in wanted:
        row, worker_mb = figures.summaries_per_second(engine, data, work, size["batch"])
        measure("summaries", lambda: row)
    measure("latency", lambda: figures.end_to_end_latency(engine, data, work, size["seconds"]))
    measure("callbacks", lambda: figures.callbacks_per_second(engine, data, work, size["batch"]))
    measure("import", lambda: loading.import_rate(engine, url, data.small[-1].sid, work, size["rows"]))
    measure("memory", lambda: loading.memory(api_mb, worker_mb, data.medium.sid, data.big.sid, size["big_calls"],
                                             size["big_calls"] // 10))
    measure("feedback-writes", lambda: contention.feedback_writes(engine, url, work, size["seconds"]))
    measure("call-ingest", lambda: contention.call_ingest(engine, url, work, size["seconds"]))
    for name, run in (("http-feedback", request_paths.feedback_posts),
                      ("http-annotations", request_paths.annotation_updates), ("http-creates", request_paths.creates),
                      ("http-status", request_paths.status_callbacks)):
        measure(name, lambda: run(engine, data, work, size["seconds"]))
    measure("console", lambda: console_pages.console_pages(engine, work, size["console_summaries"],
                                                           size["console_attempts"]))
    notes = "".join(f"\n{row.notes}\n" for row in rows if row.notes)
    report = (f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}; "
              f"PostgreSQL {server}.\n\n{table(rows)}\n{notes}")
    print("\n" + report)
    if args.output:
        Path(args.output).write_text(report)
    shutil.rmtree(work, ignore_errors=True)
    return 0 if all(row.met is not False for row in rows) else 1
