"""What the command line prints from outside is shown, never obeyed (a receiver's escape sequences
cannot reach the operator's terminal), and CSV files from spreadsheets load: a UTF-8 byte order
mark is accepted, an over-long field is refused in one line naming its row."""

from __future__ import annotations

import argparse

import pytest
from sqlalchemy import text

from cli import commands
from shared.accounts.sids import CALL, new_sid
from shared.safe_text import safe
from tests.support import make_account, snapshot, summary_in

# What a receiver may answer (PostgreSQL text holds no NUL, so that one is for safe() alone).
HOSTILE = "ok\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x1b]0;pwned\x07\x9b31m\r\nFAKE LINE\u202egnp.exe"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\u202e", "\x00")


def finished_with_a_hostile_callback(engine, client, account) -> str:
    sid = summary_in(engine, account, "failed", reason="boom " + HOSTILE,
                     status_callback="https://receiver.example.com/hook")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO callback_deliveries (summary_sid, account_sid, url, host, method, params, idempotency_token, "
            "attempt_limit, state, attempts, last_error) VALUES (:s, :a, :u, 'receiver.example.com', 'POST', '{}', "
            "'t', 3, 'failed', 1, :e)"), {"s": sid, "a": account.sid, "u": "https://receiver.example.com/h\x1b[2J",
                                          "e": "HTTP 500 " + HOSTILE})
        connection.execute(text(
            "INSERT INTO callback_attempts (summary_sid, number, attempted_at, outcome, status_code, error, latency_ms, "
            "response_excerpt) VALUES (:s, 1, now(), 'failed', 500, :e, 3, :x)"),
            {"s": sid, "e": HOSTILE, "x": HOSTILE})
    return sid


def test_safe_spells_out_every_control_character_and_bidi_override():
    shown = safe(HOSTILE + "\x00")
    assert not any(raw in shown for raw in RAW) and "\n" not in shown
    assert "\\x1b]52;c;" in shown and "\\u202e" in shown and "\\x9b" in shown and "\\x0d\\x0a" in shown


@pytest.mark.parametrize("command, args", [
    ("show", lambda sid: argparse.Namespace(sids=[sid], json=False)),
    ("jobs", lambda sid: argparse.Namespace(status=None, account=None, since=None, limit=10, json=False)),
    ("callbacks", lambda sid: argparse.Namespace(action="list", state=None, limit=10, json=False)),
    ("show", lambda sid: argparse.Namespace(sids=[sid], json=True)),
])
def test_what_a_receiver_sent_is_printed_escaped(engine, client, redis_client, capsys, command, args):
    sid = finished_with_a_hostile_callback(engine, client, make_account(engine))
    getattr(commands, command)(args(sid))
    out = capsys.readouterr().out
    assert sid in out
    assert not any(raw in out for raw in RAW), repr(out)
    assert "\nFAKE LINE" not in out  # a value never starts a line of its own


def call_file(tmp_path, account, body: str, bom: bool = False):
    path = tmp_path / "calls.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode())
    return path


def test_a_csv_file_with_a_utf8_byte_order_mark_loads(engine, redis_client, tmp_path, capsys):
    account = make_account(engine)
    sids = [new_sid(CALL) for _ in range(3)]
    body = "sid,account_sid,start_time\n" + "".join(f"{sid},{account.sid},2024-01-0{i + 1}T10:00:00Z\n"
                                                     for i, sid in enumerate(sids))
    commands.calls(argparse.Namespace(action="import", file=call_file(tmp_path, account, body, bom=True)))
    assert "3 rows loaded" in capsys.readouterr().out
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM calls")).scalar() == 3


def test_an_over_long_csv_field_is_refused_in_one_line_naming_its_row(engine, redis_client, tmp_path):
    account = make_account(engine)
    body = (f"sid,account_sid,start_time\n{new_sid(CALL)},{account.sid},2024-01-01T10:00:00Z\n"
            f"{new_sid(CALL)},{account.sid},2024-01-01T10:00:00Z,{'x' * 200_000}\n")
    before = snapshot(engine, redis_client)
    with pytest.raises(commands.CommandError) as refused:
        commands.calls(argparse.Namespace(action="import", file=call_file(tmp_path, account, body)))
    message = str(refused.value)
    assert "line 3" in message and "field larger than field limit" in message and "nothing was loaded" in message
    assert len(message) < 300 and "\n" not in message
    assert snapshot(engine, redis_client) == before


def test_an_empty_first_line_is_a_missing_header_not_a_crash(engine, redis_client, tmp_path):
    with pytest.raises(commands.CommandError, match="header lacks sid"):
        commands.calls(argparse.Namespace(action="import", file=call_file(tmp_path, None, "\n\n")))


def test_a_time_postgresql_cannot_store_is_refused_naming_its_row(engine, redis_client, tmp_path):
    account = make_account(engine)
    body = (f"sid,account_sid,start_time\n{new_sid(CALL)},{account.sid},2024-01-01T10:00:00Z\n"
            f"{new_sid(CALL)},{account.sid},9999-12-31T23:30:00-01:00\n")
    before = snapshot(engine, redis_client)
    with pytest.raises(commands.CommandError, match="line 3: start_time .* is outside 1970-01-01"):
        commands.calls(argparse.Namespace(action="import", file=call_file(tmp_path, account, body)))
    assert snapshot(engine, redis_client) == before
