"""The voice status callback's statement (api/voice_status.py RECORD_CALL) against the one of an
earlier commit, on one autocommit connection: microseconds per statement, a new call then a second
event for it, alternating runs. Not part of `make bench`; for a change to that statement:

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test .venv/bin/python -m bench.record_call_cost COMMIT
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

from sqlalchemy import create_engine, text

from api import voice_status
from shared.accounts.sids import CALL, new_sid
from shared.platform.db import sqlalchemy_url

ACCOUNT = "AC" + "be" * 16


def _statement_at(commit: str):
    source = subprocess.run(["git", "show", f"{commit}:api/voice_status.py"], capture_output=True, text=True,
                            check=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(source)
    spec = importlib.util.spec_from_file_location("voice_status_then", file.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RECORD_CALL


def _per_statement_us(engine, statement, calls: int) -> float:
    sids = [new_sid(CALL) for _ in range(calls)]
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        started = time.perf_counter()
        for sid in sids + sids:
            connection.execute(statement, {"sid": sid, "account": ACCOUNT, "start": dt.datetime.now(dt.timezone.utc)})
        return (time.perf_counter() - started) / (2 * calls) * 1e6


def main(commit: str, calls: int = 3000, rounds: int = 5) -> None:
    engine = create_engine(sqlalchemy_url(os.environ["DATABASE_URL"]))
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO accounts (sid, friendly_name, auth_token_hash, auth_token_encrypted) "
                                "VALUES (:sid, 'bench', 'x', 'x') ON CONFLICT DO NOTHING"), {"sid": ACCOUNT})
    then = _statement_at(commit)
    try:
        for _ in range(rounds):
            print(f"{commit[:8]}: {_per_statement_us(engine, then, calls):.0f} us   "
                  f"now: {_per_statement_us(engine, voice_status.RECORD_CALL, calls):.0f} us", flush=True)
    finally:
        with engine.begin() as connection:
            for table in ("calls", "calls_rollup_deltas", "daily_calls"):
                connection.execute(text(f"DELETE FROM {table} WHERE account_sid = :sid"), {"sid": ACCOUNT})
            connection.execute(text("DELETE FROM accounts WHERE sid = :sid"), {"sid": ACCOUNT})
        engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
