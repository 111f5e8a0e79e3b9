"""The write-contention rows (issue 13): many connections writing to ONE account at once, through
pgbench, with the rollup upkeep (migration 0007's triggers, and the fold running every second as
the scheduler runs it) against the same writes to an identical table with no triggers.

Each pgbench client runs the statement the API runs: the Feedback endpoint's upsert
(api/feedback.py) on a random call of the account, or the voice status ingest's insert
(api/voice_status.py) of a new call. The two tables of a pair have the same columns, indexes and
foreign keys; ours and the plain one alternate at each connection count.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

from sqlalchemy import Engine, text

from bench.figures import Row
from bench.loading import _psql

CONNECTIONS = (4, 16, 64)
ACCOUNT = "AC" + "c0" * 16  # its own account: the dataset's summaries never see these calls
CALLS = 100_000
CALL_SID = "'CA' || lpad(to_hex(:i::int), 32, '0')"
FEEDBACK = """\\set i random(1, {calls})
\\set q random(1, 5)
INSERT INTO {table} AS f (call_sid, account_sid, quality_score, issues)
VALUES ({sid}, '{account}', :q::smallint, CASE WHEN :q::int < 3 THEN ARRAY['dropped-call'] ELSE '{{}}'::text[] END)
ON CONFLICT (call_sid) DO UPDATE SET quality_score = excluded.quality_score, issues = excluded.issues,
    date_updated = now()
RETURNING f.call_sid, f.account_sid, f.quality_score, f.issues, f.date_created, f.date_updated;
"""
INGEST = """INSERT INTO {table} AS c (sid, account_sid, start_time)
VALUES ('CA' || md5(random()::text || clock_timestamp()::text), '{account}', now())
ON CONFLICT (sid) DO UPDATE SET account_sid = excluded.account_sid, provisional = false,
    start_time = CASE WHEN c.provisional THEN excluded.start_time ELSE least(c.start_time, excluded.start_time) END
WHERE c.provisional OR (c.account_sid = excluded.account_sid AND excluded.start_time < c.start_time);
"""
PLAIN = {"call_feedback": "bench_call_feedback_plain", "calls": "bench_calls_plain"}


def _pgbench() -> str:
    beside_psql = Path(_psql()).with_name("pgbench")
    found = str(beside_psql) if beside_psql.exists() else shutil.which("pgbench")
    if not found:
        raise RuntimeError("pgbench is needed for the contention rows: install PostgreSQL's client")
    return found


def _prepare(engine: Engine) -> None:
    """The account, its calls (today), and the plain twins of `calls` and `call_feedback`."""
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO accounts (sid, friendly_name, auth_token_hash, auth_token_encrypted) "
            "VALUES (:a, 'write contention', repeat('0', 64), '') ON CONFLICT DO NOTHING"), {"a": ACCOUNT})
        connection.execute(text(
            f"INSERT INTO calls (sid, account_sid, start_time) SELECT {CALL_SID.replace(':i::int', 'i')}, :a, now() "
            "FROM generate_series(1, :n) i ON CONFLICT DO NOTHING"), {"a": ACCOUNT, "n": CALLS})
        for table, plain in PLAIN.items():
            connection.execute(text(f"DROP TABLE IF EXISTS {plain}; "
                                    f"CREATE TABLE {plain} (LIKE {table} INCLUDING ALL)"))
        connection.execute(text("ALTER TABLE bench_call_feedback_plain "
                                "ADD FOREIGN KEY (call_sid) REFERENCES calls (sid) ON DELETE CASCADE, "
                                "ADD FOREIGN KEY (account_sid) REFERENCES accounts (sid)"))
        connection.execute(text("ALTER TABLE bench_calls_plain ADD FOREIGN KEY (account_sid) REFERENCES accounts (sid)"))
        # Both sides start alike: the feedback of every call present, as after a first round of writes.
        for table in ("call_feedback", "bench_call_feedback_plain"):
            connection.execute(text(f"INSERT INTO {table} (call_sid, account_sid, quality_score) "
                                    "SELECT sid, account_sid, 5 FROM calls WHERE account_sid = :a "
                                    "ON CONFLICT DO NOTHING"), {"a": ACCOUNT})
    fold_all()


def fold_all() -> None:
    from worker import folding

    while folding.fold(max_batches=100):
        pass


def _rate(database_url: str, script: Path, connections: int, seconds: int) -> tuple[float, float]:
    """(transactions per second, mean latency in ms) of one pgbench run."""
    done = subprocess.run([_pgbench(), "-n", "-M", "prepared", "-c", str(connections), "-j", "2", "-T", str(seconds),
                           "-f", str(script), database_url], check=True, capture_output=True, text=True)
    tps = float(re.search(r"^tps = ([\d.]+)", done.stdout, re.M).group(1))
    latency = float(re.search(r"^latency average = ([\d.]+) ms", done.stdout, re.M).group(1))
    return tps, latency


def _with_folding(run):
    """Run while a fold runs every second, as the scheduler would."""
    from worker import folding

    stop = threading.Event()

    def fold_every_second():
        while not stop.wait(1.0):
            folding.fold()

    folder = threading.Thread(target=fold_every_second)
    folder.start()
    try:
        return run()
    finally:
        stop.set()
        folder.join()


def _row(engine: Engine, database_url: str, work: Path, what: str, template: str, table: str, seconds: int,
         check_ordering: bool) -> Row:
    scripts = {}
    for name in (table, PLAIN[table]):
        scripts[name] = work / f"{name}.pgbench"
        scripts[name].write_text(template.format(table=name, account=ACCOUNT, calls=CALLS, sid=CALL_SID))
    ours, plain = {}, {}
    for connections in CONNECTIONS:
        ours[connections] = _with_folding(lambda: _rate(database_url, scripts[table], connections, seconds))
        plain[connections] = _rate(database_url, scripts[PLAIN[table]], connections, seconds)
    fold_all()
    ratios = {c: ours[c][0] / plain[c][0] for c in CONNECTIONS}
    met = ratios[64] >= 0.8 and (not check_ordering or ours[64][0] >= ours[4][0])
    show = lambda results: ", ".join(f"{c}: {results[c][0]:,.0f}/s ({results[c][1]:.1f} ms)" for c in CONNECTIONS)
    target = "≥ 0.8 at 64" + (", and 64 ≥ 4" if check_ordering else "")
    return Row(f"{what} to ONE account at 4, 16, 64 connections (pgbench; mean latency)", show(ours),
               f"no upkeep: {show(plain)}", " / ".join(f"{ratios[c]:.2f}" for c in CONNECTIONS), target, met)


def feedback_writes(engine: Engine, database_url: str, work: Path, seconds: int) -> Row:
    _prepare(engine)
    return _row(engine, database_url, work, "feedback writes per second", FEEDBACK, "call_feedback", seconds, True)


def call_ingest(engine: Engine, database_url: str, work: Path, seconds: int) -> Row:
    _prepare(engine)
    return _row(engine, database_url, work, "call ingests per second", INGEST, "calls", seconds, False)
