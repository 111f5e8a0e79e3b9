"""Bulk loading of calls and call feedback from CSV with COPY, all or nothing.

Rows are checked in Python (so a bad one is reported with its line number), streamed with COPY
into a temporary staging table, checked against the database in a few set-based queries, and
moved into place in the same transaction. Any error rolls the whole file back.

Calls read from Twilio by `summaries calls sync` (cli/sync.py) take the same path, load_calls, with
Twilio's conflict rules instead of the file's.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from sqlalchemy import Connection

from shared.accounts.sids import ACCOUNT, CALL, is_sid
from shared.errors import ImportFailed
from shared.formats import EARLIEST_DATE, LATEST_DATE, storable
from shared.models import FEEDBACK_ISSUES
from shared.platform.db import lift_statement_timeout

CALL_COLUMNS = ("sid", "account_sid", "start_time")
FEEDBACK_COLUMNS = ("call_sid", "quality_score", "issues", "date_created")
ISSUE_SET = frozenset(FEEDBACK_ISSUES)




def _timestamp(raw: str, line: int, column: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ImportFailed(line, f"{column} {raw!r} is not an ISO 8601 timestamp") from None
    # Naive timestamps are UTC, as the platform exports them.
    value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
    if not storable(value):
        raise ImportFailed(line, f"{column} {raw!r} is outside {EARLIEST_DATE} .. {LATEST_DATE} (UTC)")
    return value


def _records(reader) -> Iterator[list[str]]:
    """The reader's records; a row the csv module refuses (a field over its size limit, a quote
    never closed) fails the import naming the row, not with a traceback."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ImportFailed(reader.line_num, f"unreadable CSV row ({error})") from None
        yield record


def _rows(file: IO[str], columns: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(file)
    records = _records(reader)
    header = next(records, None)
    if header is None:
        raise ImportFailed(1, "the file is empty; expected a header " + ",".join(columns))
    # A UTF-8 byte order mark (spreadsheets write one) is not part of the first column's name.
    header = [name.lstrip("\ufeff").strip().lower() if i == 0 else name.strip().lower()
              for i, name in enumerate(header)]
    missing = [name for name in columns if name not in header]
    if missing:
        raise ImportFailed(1, f"header lacks {', '.join(missing)}; expected {','.join(columns)}")
    positions = [header.index(name) for name in columns]
    width = max(positions)
    for record in records:
        line = reader.line_num
        if not record:
            continue
        if len(record) <= width:
            raise ImportFailed(line, f"expected at least {width + 1} fields, found {len(record)}")
        yield line, [record[i] for i in positions]


def _calls(file: IO[str]) -> Iterator[tuple]:
    for line, (sid, account_sid, start_time) in _rows(file, CALL_COLUMNS):
        sid, account_sid = sid.strip(), account_sid.strip()
        if not is_sid(sid, CALL):
            raise ImportFailed(line, f"sid {sid[:40]!r} is not a call SID (CA + 32 lowercase hex digits)")
        if not is_sid(account_sid, ACCOUNT):
            raise ImportFailed(line, f"account_sid {account_sid[:40]!r} is not an account SID")
        yield line, sid, account_sid, _timestamp(start_time, line, "start_time")


def _feedback(file: IO[str]) -> Iterator[tuple]:
    for line, (call_sid, score, issues, date_created) in _rows(file, FEEDBACK_COLUMNS):
        call_sid, score = call_sid.strip(), score.strip()
        if not is_sid(call_sid, CALL):
            raise ImportFailed(line, f"call_sid {call_sid[:40]!r} is not a call SID")
        if score not in ("1", "2", "3", "4", "5"):
            raise ImportFailed(line, f"quality_score {score[:10]!r} is not an integer from 1 to 5")
        names = list(dict.fromkeys(name.strip() for name in issues.split(";") if name.strip()))
        unknown = [name for name in names if name not in ISSUE_SET]
        if unknown:
            raise ImportFailed(line, f"unknown issue {unknown[0][:40]!r}")
        yield line, call_sid, int(score), names, _timestamp(date_created, line, "date_created")


COPY_CHUNK_ROWS = 10_000


def _copy_lines(connection: Connection, table: str, columns: str, lines: Iterator[str]) -> int:
    """COPY of rows already in COPY's text format, in large chunks: a third of the time psycopg's
    write_row takes, which adapts every value in Python. Only for values that need no escaping."""
    count, chunk = 0, []
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for line in lines:
                chunk.append(line)
                if len(chunk) == COPY_CHUNK_ROWS:
                    copy.write("".join(chunk))
                    count += len(chunk)
                    chunk.clear()
            copy.write("".join(chunk))
            count += len(chunk)
    return count


def _check(connection: Connection, sql: str, message: str) -> None:
    """Raise ImportFailed for the first offending row the query finds: (line, value)."""
    bad = connection.exec_driver_sql(sql).first()
    if bad:
        raise ImportFailed(bad[0], message.format(*bad))


@dataclass(frozen=True)
class CallsLoaded:
    """What loading calls did: rows staged, calls inserted, calls already there that changed."""

    rows: int
    inserted: int
    changed: int

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.changed


def load_calls(connection: Connection, calls: Iterable[tuple[int, str, str, dt.datetime]],
               mode: str = "file") -> CallsLoaded:
    """Stage (line, sid, account_sid, start_time) rows with COPY, then move them into `calls` with a few
    set-based statements, in the caller's transaction. The SIDs must be checked ones (is_sid): they go
    to COPY unescaped. The one loading path of the CSV import and of `calls sync`; `mode` says whose
    word the rows are:

    'file', a CSV import, all or nothing: a call already present with the same account and time is
    skipped (re-import is safe), a provisional one is confirmed; a call twice in the input, or present
    with another account or start_time, fails the load.
    'twilio', Twilio's Calls API, authoritative for its own calls: an absent call is inserted; a present
    one takes Twilio's account and start_time and is no longer provisional (moved to another account,
    the feedback posted under the old one is dropped: migration 0006). A call already so is not
    written at all, so a second sync of the same calls changes nothing. Of a call twice, the last wins.
    """
    if mode not in ("file", "twilio"):
        raise ValueError(f"unknown mode {mode!r}")
    lift_statement_timeout(connection)  # a COPY of a million rows takes its time (README: about 17 s)
    connection.exec_driver_sql(
        "CREATE TEMP TABLE staged_calls (line int, sid text, account_sid text, start_time timestamptz) ON COMMIT DROP"
    )
    # SIDs are checked to be hex and timestamps re-printed by Python: nothing in them needs escaping.
    lines = (f"{line}\t{sid}\t{account}\t{start.isoformat()}\n" for line, sid, account, start in calls)
    count = _copy_lines(connection, "staged_calls", "line, sid, account_sid, start_time", lines)
    _check(connection, "SELECT s.line, s.account_sid FROM staged_calls s LEFT JOIN accounts a ON a.sid = s.account_sid "
                       "WHERE a.sid IS NULL ORDER BY s.line LIMIT 1", "account {1} does not exist")
    loaded = (_place_file_calls if mode == "file" else _upsert_twilio_calls)(connection, count)
    connection.exec_driver_sql("DROP TABLE staged_calls")  # a second load in this transaction may follow
    return loaded


def _place_file_calls(connection: Connection, count: int) -> CallsLoaded:
    inserted = connection.exec_driver_sql(
        "INSERT INTO calls (sid, account_sid, start_time) SELECT sid, account_sid, start_time FROM staged_calls "
        "ON CONFLICT (sid) DO NOTHING"
    ).rowcount
    changed = 0
    if inserted < count:
        # Some rows were skipped: identical re-imports are fine, anything else fails the whole file
        # (the caller's transaction rolls back what was inserted). Checked only then: the common
        # case, all new calls, pays for none of these queries.
        _check(connection, "SELECT max(line), sid FROM staged_calls GROUP BY sid HAVING count(*) > 1 ORDER BY 1 "
                           "LIMIT 1", "call {1} appears twice in the file")
        # A call known only from its feedback (provisional) is confirmed by the file, which may move it
        # to another account: the feedback posted under the wrong one is then dropped (migration 0006).
        changed = connection.exec_driver_sql(
            "UPDATE calls c SET account_sid = s.account_sid, start_time = s.start_time, provisional = false "
            "FROM staged_calls s WHERE c.sid = s.sid AND c.provisional"
        ).rowcount
        _check(connection, "SELECT s.line, s.sid FROM staged_calls s JOIN calls c ON c.sid = s.sid WHERE "
                           "(c.account_sid, c.start_time) IS DISTINCT FROM (s.account_sid, s.start_time) "
                           "ORDER BY s.line LIMIT 1", "call {1} already exists with another account or start_time")
    return CallsLoaded(count, inserted, changed)


def _upsert_twilio_calls(connection: Connection, count: int) -> CallsLoaded:
    # One statement, so a status callback recording the same call meanwhile cannot slip between an
    # update and an insert. Sorted by SID: concurrent syncs lock rows in the same order. A row this
    # statement inserted has xmax 0; one it updated carries the updating transaction's id there.
    inserted, changed = connection.exec_driver_sql(
        "WITH written AS (INSERT INTO calls (sid, account_sid, start_time) "
        "SELECT DISTINCT ON (sid) sid, account_sid, start_time FROM staged_calls ORDER BY sid, line DESC "
        "ON CONFLICT (sid) DO UPDATE SET account_sid = excluded.account_sid, start_time = excluded.start_time, "
        "provisional = false WHERE (calls.account_sid, calls.start_time, calls.provisional) "
        "IS DISTINCT FROM (excluded.account_sid, excluded.start_time, false) RETURNING xmax = 0 AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM written"
    ).one()
    return CallsLoaded(count, inserted, changed)


def import_calls(connection: Connection, file: IO[str]) -> int:
    """Load calls from CSV, all or nothing (load_calls, mode 'file'); returns the rows loaded."""
    return load_calls(connection, _calls(file), "file").rows


def import_feedback(connection: Connection, file: IO[str]) -> int:
    """Load feedback; an entry for a call that has one replaces it, as posting to the API does."""
    lift_statement_timeout(connection)  # as load_calls: long by design
    connection.exec_driver_sql(
        "CREATE TEMP TABLE staged_feedback (line int, call_sid text, quality_score smallint, issues text[], "
        "date_created timestamptz) ON COMMIT DROP"
    )
    # Issue names come from a fixed set of lowercase words and hyphens: an array literal needs no quoting.
    lines = (f"{line}\t{sid}\t{score}\t{{{','.join(issues)}}}\t{given.isoformat()}\n"
             for line, sid, score, issues, given in _feedback(file))
    count = _copy_lines(connection, "staged_feedback", "line, call_sid, quality_score, issues, date_created", lines)
    _check(connection, "SELECT max(line), call_sid FROM staged_feedback GROUP BY call_sid HAVING count(*) > 1 "
                       "ORDER BY 1 LIMIT 1", "call {1} has two feedback entries in the file")
    _check(connection, "SELECT s.line, s.call_sid FROM staged_feedback s LEFT JOIN calls c ON c.sid = s.call_sid "
                       "WHERE c.sid IS NULL ORDER BY s.line LIMIT 1", "call {1} does not exist")
    connection.exec_driver_sql(
        "INSERT INTO call_feedback (call_sid, account_sid, quality_score, issues, date_created, date_updated) "
        "SELECT s.call_sid, c.account_sid, s.quality_score, s.issues, s.date_created, now() "
        "FROM staged_feedback s JOIN calls c ON c.sid = s.call_sid "
        "ON CONFLICT (call_sid) DO UPDATE SET quality_score = excluded.quality_score, issues = excluded.issues, "
        "date_created = excluded.date_created, date_updated = now()"
    )
    connection.exec_driver_sql("DROP TABLE staged_feedback")
    return count
