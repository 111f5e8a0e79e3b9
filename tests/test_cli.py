"""The `summaries` command line, run as a real process against the test database."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import text

from shared.accounts.sids import CALL, new_sid
from tests.processes import summaries_cli as summaries
from tests.support import make_account, snapshot

pytestmark = pytest.mark.slow  # every test runs `summaries` as a process


def scalar(engine, sql: str):
    with engine.connect() as connection:
        return connection.execute(text(sql)).scalar()


def test_accounts_create_prints_a_usable_sid_and_token_and_makes_subaccounts(engine, client):
    made = summaries("accounts", "create", "--name", "Acme", "--json")
    assert made.returncode == 0, made.stderr
    parent = json.loads(made.stdout)
    assert parent["sid"].startswith("AC") and len(parent["auth_token"]) == 32 and parent["parent_sid"] is None
    child = json.loads(summaries("accounts", "create", "--parent", parent["sid"], "--json").stdout)
    assert child["parent_sid"] == parent["sid"]
    path = f"/2010-04-01/Accounts/{child['sid']}/Calls/FeedbackSummary.json"
    form = {"StartDate": "2024-01-01", "EndDate": "2024-01-02"}
    assert client.post(path, form=form, auth=(parent["sid"], parent["auth_token"])).status == 201

    plain = summaries("accounts", "create")
    assert plain.returncode == 0 and "account_sid  AC" in plain.stdout and "auth_token" in plain.stdout


def test_accounts_create_refuses_an_unknown_or_nested_parent(engine):
    unknown = summaries("accounts", "create", "--parent", "AC" + "0" * 32)
    assert unknown.returncode == 2 and "does not exist" in unknown.stderr
    parent = make_account(engine)
    child = make_account(engine, parent)
    nested = summaries("accounts", "create", "--parent", child.sid)
    assert nested.returncode == 2 and "cannot have subaccounts" in nested.stderr
    assert scalar(engine, "SELECT count(*) FROM accounts") == 2


def test_calls_and_feedback_import_load_files_and_report_a_bad_line(engine, tmp_path):
    account = make_account(engine)
    sids = [new_sid(CALL) for _ in range(3)]
    calls = tmp_path / "calls.csv"
    calls.write_text("sid,account_sid,start_time\n" + "".join(f"{sid},{account.sid},2024-01-0{i + 1}T10:00:00Z\n"
                                                              for i, sid in enumerate(sids)))
    loaded = summaries("calls", "import", str(calls))
    assert loaded.returncode == 0 and "3 rows loaded" in loaded.stdout, loaded.stderr

    feedback = tmp_path / "feedback.csv"
    feedback.write_text(f"call_sid,quality_score,issues,date_created\n{sids[0]},1,dropped-call,2024-01-01T11:00:00Z\n"
                        f"{sids[1]},7,,2024-01-02T11:00:00Z\n")
    before = snapshot(engine)
    refused = summaries("feedback", "import", str(feedback))
    assert refused.returncode == 2
    assert "line 3" in refused.stderr and "quality_score" in refused.stderr and "nothing was loaded" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert snapshot(engine) == before

    missing = summaries("calls", "import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("sid,account_sid,start_time\n\xe9\n".encode("latin-1"))
    assert "not UTF-8" in summaries("calls", "import", str(latin1)).stderr


def test_seed_adds_realistic_calls_and_feedback(engine):
    account = make_account(engine)
    seeded = summaries("seed", "--account", account.sid, "--calls", "20000", "--days", "10")
    assert seeded.returncode == 0, seeded.stderr
    assert scalar(engine, "SELECT count(*) FROM calls") == 20000
    feedback = scalar(engine, "SELECT count(*) FROM call_feedback")
    assert 0.17 < feedback / 20000 < 0.23  # about one call in five
    oldest = scalar(engine, "SELECT min(start_time) FROM calls")
    assert oldest > dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10, minutes=5)
    high, low = (scalar(engine, f"SELECT count(*) FROM call_feedback WHERE quality_score {cmp}")
                 for cmp in (">= 4", "<= 2"))
    assert high > 4 * low  # skewed high
    issues_on_low = scalar(engine, "SELECT avg(cardinality(issues)) FROM call_feedback WHERE quality_score <= 2")
    issues_on_high = scalar(engine, "SELECT avg(cardinality(issues)) FROM call_feedback WHERE quality_score >= 4")
    assert issues_on_low > 5 * issues_on_high  # issues mostly on low scores
    assert scalar(engine, "SELECT count(*) FROM call_feedback f JOIN calls c ON c.sid = f.call_sid "
                          "WHERE f.date_created < c.start_time") == 0


@pytest.mark.parametrize("args, message", [
    (("seed", "--account", "AC" + "0" * 32, "--calls", "10"), "does not exist"),
    (("seed", "--account", "AC" + "0" * 32, "--calls", "-1"), "--calls"),
])
def test_seed_refuses_bad_arguments(engine, args, message):
    result = summaries(*args)
    assert result.returncode == 2 and message in result.stderr


def test_migrate_is_idempotent(engine):
    result = summaries("migrate")
    assert result.returncode == 0 and "migrations applied" in result.stdout, result.stderr


def test_status_with_redis_down_shows_what_postgresql_knows(engine, redis_client):
    import os

    from tests.support import free_port

    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "ENQUEUE_TIMEOUT_S": "0.5"}
    table = summaries("status", env=env)
    assert table.returncode == 0, table.stderr
    assert "Redis unreachable" in table.stdout and "completed" in table.stdout and "Traceback" not in table.stderr
    found = json.loads(summaries("status", "--json", env=env).stdout)
    assert found["redis"].startswith("unreachable") and found["queues"] is None and found["workers"] is None
    assert found["summaries"]["queued"] == 0


def test_console_users_are_created_with_a_password_from_stdin_listed_and_deleted(engine):
    from shared.operator import users

    made = summaries("console-users", "create", "alice", "--role", "operator", stdin="a long enough secret\n")
    assert made.returncode == 0 and "console user alice created (operator)" in made.stdout, made.stderr
    assert summaries("console-users", "create", "sso-bob", "--role", "viewer", "--no-password").returncode == 0
    stored = scalar(engine, "SELECT password_hash FROM console_users WHERE name = 'alice'")
    assert stored.startswith("scrypt$") and "a long enough secret" not in stored
    assert users.password_matches("a long enough secret", stored) and not users.password_matches("other", stored)
    listed = json.loads(summaries("console-users", "list", "--json").stdout)
    assert [(u["name"], u["role"], u["password"]) for u in listed] == [("alice", "operator", True),
                                                                       ("sso-bob", "viewer", False)]
    assert "password_hash" not in summaries("console-users", "list", "--json").stdout

    for args, stdin, message in ((["carol", "--role", "operator"], "short\n", "12 to 1024 characters"),
                                 (["carol", "--role", "operator"], "", "no password"),
                                 (["alice", "--role", "viewer"], "another long secret\n", "exists"),
                                 (["bad name", "--role", "viewer"], "another long secret\n", "letters, digits")):
        refused = summaries("console-users", "create", *args, stdin=stdin)
        assert refused.returncode == 2 and message in refused.stderr, (args, refused.stderr)
    assert summaries("console-users", "delete", "alice").returncode == 0
    assert summaries("console-users", "delete", "alice").returncode == 1
    assert scalar(engine, "SELECT count(*) FROM console_users") == 1
