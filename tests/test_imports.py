"""CSV imports on real PostgreSQL: loaded with COPY, all or nothing, a bad row named by its line."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from sqlalchemy import text

from cli.imports import ImportFailed, import_calls, import_feedback, load_calls
from shared.accounts.sids import CALL, new_sid
from tests.support import add_feedback, make_account, make_calls, snapshot

UTC = dt.timezone.utc



def load(engine, loader, content: str) -> int:
    with engine.begin() as connection:
        return loader(connection, io.StringIO(content, newline=""))


def rows(engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def test_calls_import_loads_every_row_in_utc_with_extra_columns_in_any_order(engine, account):
    a, b = new_sid(CALL), new_sid(CALL)
    content = (f"direction,start_time,account_sid,sid\n"
               f"inbound,2024-01-02T03:04:05,{account.sid},{a}\n"
               f"outbound,2024-01-02 23:30:00-02:00,{account.sid},{b}\n")
    assert load(engine, import_calls, content) == 2
    assert sorted(rows(engine, "SELECT sid, start_time FROM calls")) == sorted([
        (a, dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)), (b, dt.datetime(2024, 1, 3, 1, 30, tzinfo=UTC))])


def test_calls_import_again_is_harmless(engine, account):
    content = f"sid,account_sid,start_time\n{new_sid(CALL)},{account.sid},2024-01-02T03:04:05Z\n"
    load(engine, import_calls, content)
    load(engine, import_calls, content)
    assert rows(engine, "SELECT count(*) FROM calls") == [(1,)]


def _calls_csv(account_sid: str, bad_line: int, bad_row: str, total: int = 5) -> str:
    lines = ["sid,account_sid,start_time"]
    for line in range(2, total + 2):
        lines.append(bad_row if line == bad_line else f"{new_sid(CALL)},{account_sid},2024-01-02T00:00:00Z")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("bad_row, reason", [
    ("CA123,{ac},2024-01-02T00:00:00Z", "not a call SID"),
    ("{ca},AC123,2024-01-02T00:00:00Z", "not an account SID"),
    ("{ca},AC00000000000000000000000000000000,2024-01-02T00:00:00Z", "does not exist"),
    ("{ca},{ac},yesterday", "start_time"),
    ("{ca},{ac}", "expected at least 3 fields"),
])
def test_a_bad_call_row_is_reported_with_its_line_and_nothing_is_loaded(engine, account, bad_row, reason):
    bad_row = bad_row.format(ac=account.sid, ca=new_sid(CALL))
    before = snapshot(engine)
    with pytest.raises(ImportFailed, match=f"^line 4: .*{reason}") as raised:
        load(engine, import_calls, _calls_csv(account.sid, 4, bad_row))
    assert raised.value.line == 4
    assert snapshot(engine) == before


def test_a_call_twice_in_the_file_or_conflicting_with_the_database_is_refused(engine, account):
    sid = new_sid(CALL)
    twice = f"sid,account_sid,start_time\n{sid},{account.sid},2024-01-02T00:00:00Z\n{sid},{account.sid},2024-01-02T00:00:00Z\n"
    with pytest.raises(ImportFailed, match="^line 3: .*twice"):
        load(engine, import_calls, twice)
    existing = make_calls(engine, account, [dt.datetime(2024, 1, 1, tzinfo=UTC)])[0]
    moved = f"sid,account_sid,start_time\n{new_sid(CALL)},{account.sid},2024-01-02T00:00:00Z\n{existing},{account.sid},2024-01-05T00:00:00Z\n"
    with pytest.raises(ImportFailed, match="^line 3: .*already exists"):
        load(engine, import_calls, moved)
    assert rows(engine, "SELECT count(*) FROM calls") == [(1,)]


def test_a_header_without_the_columns_or_an_empty_file_is_refused(engine):
    with pytest.raises(ImportFailed, match="^line 1: header lacks start_time"):
        load(engine, import_calls, "sid,account_sid\n")
    with pytest.raises(ImportFailed, match="^line 1: the file is empty"):
        load(engine, import_calls, "")


def test_line_numbers_count_physical_lines_of_quoted_fields(engine, account):
    content = (f'sid,account_sid,start_time,note\n{new_sid(CALL)},{account.sid},2024-01-02T00:00:00Z,"two\nlines"\n'
               f"bad,{account.sid},2024-01-02T00:00:00Z,x\n")
    with pytest.raises(ImportFailed, match="^line 4: "):
        load(engine, import_calls, content)


def test_feedback_import_loads_and_replaces_existing_entries(engine, account):
    first, second = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=UTC)] * 2)
    load(engine, import_feedback, f"call_sid,quality_score,issues,date_created\n{first},2,dropped-call;one-way-audio,"
                                  f"2024-01-02T01:00:00Z\n{second},5,,2024-01-02T02:00:00Z\n")
    load(engine, import_feedback, f"call_sid,quality_score,issues,date_created\n{first},4, post-dial-delay ;;,"
                                  f"2024-01-03T00:00:00Z\n")
    assert sorted(rows(engine, "SELECT call_sid, account_sid, quality_score, issues, date_created FROM call_feedback")) \
        == sorted([(first, account.sid, 4, ["post-dial-delay"], dt.datetime(2024, 1, 3, tzinfo=UTC)),
                   (second, account.sid, 5, [], dt.datetime(2024, 1, 2, 2, tzinfo=UTC))])


@pytest.mark.parametrize("bad_row, reason", [
    ("{ca},6,,2024-01-02T00:00:00Z", "quality_score"),
    ("{ca},4.0,,2024-01-02T00:00:00Z", "quality_score"),
    ("{ca},4,static,2024-01-02T00:00:00Z", "unknown issue"),
    ("{ca},4,,2024-13-02", "date_created"),
    ("CA0,4,,2024-01-02T00:00:00Z", "not a call SID"),
    ("CA00000000000000000000000000000000,4,,2024-01-02T00:00:00Z", "does not exist"),
])
def test_a_bad_feedback_row_is_reported_with_its_line_and_nothing_is_loaded(engine, account, bad_row, reason):
    calls = make_calls(engine, account, [dt.datetime(2024, 1, 2, tzinfo=UTC)] * 4)
    lines = ["call_sid,quality_score,issues,date_created"]
    lines += [f"{sid},3,,2024-01-02T00:00:00Z" for sid in calls[:3]]
    lines.append(bad_row.format(ca=calls[3]))
    before = snapshot(engine)
    with pytest.raises(ImportFailed, match=f"^line 5: .*{reason}"):
        load(engine, import_feedback, "\n".join(lines) + "\n")
    assert snapshot(engine) == before


def test_twilio_mode_inserts_corrects_confirms_and_moves_calls_and_counts_what_it_wrote(engine, account):
    other = make_account(engine)
    day = dt.datetime(2024, 1, 2, tzinfo=UTC)
    same, corrected, moved = make_calls(engine, account, [day, day, day])
    provisional = new_sid(CALL)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO calls (sid, account_sid, start_time, provisional) "
                                "VALUES (:sid, :account, :day, true)"), {"sid": provisional, "account": account.sid,
                                                                        "day": day})
    add_feedback(engine, moved, account, 3, [], day)
    new, later = new_sid(CALL), day + dt.timedelta(minutes=5)
    batch = [(1, same, account.sid, day), (2, corrected, account.sid, later), (3, moved, other.sid, day),
             (4, provisional, account.sid, later), (5, new, account.sid, day), (6, new, account.sid, later)]
    with engine.begin() as connection:
        loaded = load_calls(connection, batch, "twilio")
    assert (loaded.rows, loaded.inserted, loaded.changed, loaded.unchanged) == (6, 1, 3, 2)
    assert sorted(rows(engine, "SELECT sid, account_sid, start_time, provisional FROM calls")) == sorted([
        (same, account.sid, day, False), (corrected, account.sid, later, False), (moved, other.sid, day, False),
        (provisional, account.sid, later, False), (new, account.sid, later, False)])  # of a call twice, the last
    assert rows(engine, "SELECT count(*) FROM call_feedback") == [(0,)]  # posted under the account it left

    before = snapshot(engine)
    with engine.begin() as connection:
        again = load_calls(connection, batch, "twilio")
    assert (again.inserted, again.changed, again.unchanged) == (0, 0, 6)
    assert snapshot(engine) == before
