"""Explicit configuration: a process given no servers refuses to start instead of running on servers
of its own; with a shared database every process needs the one set of keys and none writes its own;
every setting is checked as a process starts, and a bad one is one line naming it, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from cryptography.fernet import Fernet

from cli import processes
from shared.platform.config import SettingError, Settings
from tests.processes import ROOT, summaries_cli

KEY = Fernet.generate_key().decode()
SERVERS = {"DATABASE_URL": "postgresql://db.internal/app", "REDIS_URL": "redis://cache.internal:6379/0"}


def _env(tmp_path, drop=(), **values) -> dict:
    """The test run's environment for a child, on a data directory of its own, minus `drop`."""
    env = {name: value for name, value in os.environ.items()
           if name not in drop and name not in ("SUMMARIES_EMBEDDED", "AUTH_TOKEN_KEYS_FILE")}
    return {**env, "SUMMARIES_DATA_DIR": str(tmp_path / "data"), **values}


def _one_line_naming(result, variable: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and "configuration" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


# --- settings, read and checked --------------------------------------------------------------------

@pytest.mark.parametrize("variable, value", [
    ("SWEEP_INTERVAL_S", "0"), ("SUMMARY_LEASE_S", "-5"), ("ENQUEUE_TIMEOUT_S", "nan"),
    ("CALLBACK_ATTEMPT_DEADLINE_S", "inf"), ("MAX_FORM_FIELDS", "10000000"), ("METRICS_PORT", "70000"),
    ("HEARTBEAT_INTERVAL_S", "61"), ("PUBLIC_BASE_URL", "https://user:secret@api.example.com/x"),
    ("PUBLIC_BASE_URL", "https://user:secret@api.example.com"), ("TWILIO_API_BASE_URL", "https://u@api.twilio.com"),
    ("LOG_LEVEL", "LOUD"), ("LOG_FORMAT", "yaml"), ("SUMMARIES_EMBEDDED", "maybe"), ("DATABASE_URL", "mysql://root@db/app"),
    ("REDIS_URL", "http://cache:6379"), ("DATABASE_URL", "postgresql://db:port/app"),
    ("DATABASE_URL", "postgresql://app:pw@h1:5432,h2:5432/app"),  # psycopg wants them in the query
    ("REDIS_URL", "unix:///var/run/redis.sock"),  # the broker (kombu) cannot use it
    ("REDIS_URL", "rediss://cache:6380/0?ssl_cert_reqs=none"),  # would bypass REDIS_TLS_VERIFY
    ("DATABASE_STATEMENT_TIMEOUT_MS", "5s"), ("DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", "-1"),
    ("AUTH_TOKEN_KEYS", "not-a-key"), ("AUTH_TOKEN_KEYS", f"{KEY},{KEY[:-4]}"), ("AUTH_TOKEN_KEYS", f"{KEY}x"),
    ("AUTH_TOKEN_KEYS", f"{KEY[:-1]}=x"), ("AUTH_TOKEN_KEYS", KEY.replace("-", "+").replace("_", "/") + "!"),
])
def test_a_bad_value_is_refused_naming_its_variable(variable, value):
    with pytest.raises(SettingError, match=variable) as raised:
        Settings.from_env({variable: value})
    if variable in ("DATABASE_URL", "AUTH_TOKEN_KEYS", "PUBLIC_BASE_URL"):  # secrets are never echoed
        assert value.split(",")[-1] not in str(raised.value)


def test_a_key_file_of_one_key_per_line_gives_every_key(tmp_path):
    second = Fernet.generate_key().decode()
    (tmp_path / "keys").write_text(f"{KEY}\n{second}\n")
    assert Settings.from_env({"AUTH_TOKEN_KEYS_FILE": str(tmp_path / "keys")}).auth_token_keys == (KEY, second)
    assert Settings.from_env({"AUTH_TOKEN_KEYS": f" {KEY} , {second}"}).auth_token_keys == (KEY, second)


def test_secrets_come_from_files_but_not_from_both(tmp_path):
    (tmp_path / "db").write_text("postgresql://app:s3cret@db.internal/app\n")
    (tmp_path / "keys").write_text(f"{KEY}\n")
    settings = Settings.from_env({"DATABASE_URL_FILE": str(tmp_path / "db"), "AUTH_TOKEN_KEYS_FILE": str(tmp_path / "keys")})
    assert settings.database_url == "postgresql://app:s3cret@db.internal/app" and settings.auth_token_keys == (KEY,)
    with pytest.raises(SettingError, match="DATABASE_URL and DATABASE_URL_FILE"):
        Settings.from_env({"DATABASE_URL": "postgresql://x/y", "DATABASE_URL_FILE": str(tmp_path / "db")})
    with pytest.raises(SettingError, match="REDIS_URL_FILE: cannot read"):
        Settings.from_env({"REDIS_URL_FILE": str(tmp_path / "missing")})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SettingError, match="AUTH_TOKEN_KEYS_FILE: .* is empty"):
        Settings.from_env({"AUTH_TOKEN_KEYS_FILE": str(tmp_path / "empty")})


def _refusal(env) -> str:
    try:
        Settings.from_env(env)
    except SettingError as error:
        return str(error)
    return "accepted"


def _check_in_child(tmp_path, **variables) -> subprocess.CompletedProcess:
    """check_or_exit in a child given 20 s and 1 GiB: a regression (a FIFO waited on, /dev/zero read to
    its end) fails the test instead of hanging the suite or taking the machine's memory."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from shared.platform.config import check_or_exit; check_or_exit('test', servers=False, keys=False)")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "SUMMARIES_DATA_DIR": str(tmp_path / "data"),
           **variables}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("kind, refusal", [("fifo", "not a regular file"), ("/dev/zero", "not a regular file"),
                                            ("huge", "larger than 64 KiB")])
def test_a_fifo_a_device_or_a_huge_file_stops_the_start_in_one_line(tmp_path, kind, refusal):
    # A FIFO hung the start without a word (waiting for a writer); /dev/zero, or a file larger than
    # memory, was read to a MemoryError.
    path = kind
    if kind == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    elif kind == "huge":
        path = str(tmp_path / "huge")
        with open(path, "wb") as file:
            file.truncate(2 << 30)  # sparse: 2 GiB to read, none written
    result = _check_in_child(tmp_path, DATABASE_URL_FILE=path)
    _one_line_naming(result, "DATABASE_URL_FILE")
    assert refusal in result.stderr


def test_a_fifo_in_place_of_the_file_when_opened_is_refused_too(tmp_path, monkeypatch):
    # The path may change between the look and the open: the open must not wait either.
    regular, fifo = tmp_path / "regular", tmp_path / "fifo"
    regular.write_text("redis://cache:6379/0")
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *args, **kwargs: real_stat(
        regular if os.fspath(path) == str(fifo) else path, *args, **kwargs))
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_refusal({"REDIS_URL_FILE": str(fifo)})), daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a writer lets the blocked open return
        pytest.fail("opening REDIS_URL_FILE waited for a FIFO's writer")
    assert outcome[0].startswith("REDIS_URL_FILE:") and "regular file" in outcome[0], outcome


def test_a_secret_file_over_64_kib_is_refused_unread(tmp_path):
    (tmp_path / "keys").write_text(f"{KEY}\n" * (64 * 1024 // len(KEY) + 1))  # valid keys, but too many to be meant
    refusal = _refusal({"AUTH_TOKEN_KEYS_FILE": str(tmp_path / "keys")})
    assert refusal.startswith("AUTH_TOKEN_KEYS_FILE:") and "64 KiB" in refusal and KEY not in refusal, refusal


def test_a_secret_file_saved_by_a_windows_editor_is_read(tmp_path):
    # A byte order mark first and CRLF line ends: the mark was taken for part of the URL or key.
    second = Fernet.generate_key().decode()
    (tmp_path / "db").write_bytes("\ufeffpostgresql://app:s3cret@db.internal/app\r\n".encode())
    (tmp_path / "keys").write_bytes(f"\ufeff{KEY}\r\n{second}\r\n".encode())
    settings = Settings.from_env({"DATABASE_URL_FILE": str(tmp_path / "db"), "AUTH_TOKEN_KEYS_FILE": str(tmp_path / "keys")})
    assert settings.database_url == "postgresql://app:s3cret@db.internal/app"
    assert settings.auth_token_keys == (KEY, second)


def test_a_secret_file_not_in_utf_8_is_refused_without_showing_a_byte_of_it(tmp_path):
    (tmp_path / "db").write_bytes("postgresql://app:pässword@db/app".encode("latin-1"))
    refusal = _refusal({"DATABASE_URL_FILE": str(tmp_path / "db")})
    assert refusal.startswith("DATABASE_URL_FILE:") and "UTF-8" in refusal, refusal
    assert "0xe4" not in refusal and "position" not in refusal  # the byte UnicodeDecodeError names


def test_a_secret_mounted_as_a_symlink_is_read(tmp_path):
    # Kubernetes mounts each secret as a symlink into a versioned directory: followed, not refused.
    (tmp_path / "db").write_text("postgresql://db.internal/app\n")
    (tmp_path / "link").symlink_to(tmp_path / "db")
    assert Settings.from_env({"DATABASE_URL_FILE": str(tmp_path / "link")}).database_url == "postgresql://db.internal/app"


# --- commands that refuse to start ----------------------------------------------------------------

def test_the_settings_show_no_secret():
    key = Fernet.generate_key().decode()
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://app:db-secret@db.internal/cfs", "REDIS_URL": "redis://:redis-secret@r:6379/0",
        "MIGRATION_DATABASE_URL": "postgresql://owner:migration-secret@db.internal/cfs", "AUTH_TOKEN_KEYS": key,
        "TWILIO_API_KEY": "SK" + "0" * 32, "TWILIO_API_SECRET": "api-secret"})
    shown = repr(settings)
    assert settings.auth_token_keys == (key,) and "database_url=" not in shown
    for secret in ("db-secret", "redis-secret", "migration-secret", key, "api-secret"):
        assert secret not in shown


def test_a_command_without_database_url_refuses_instead_of_starting_a_database(tmp_path):
    result = summaries_cli("status", env=_env(tmp_path, drop=("DATABASE_URL",)))
    _one_line_naming(result, "DATABASE_URL")
    assert not (tmp_path / "data" / "pg").exists()  # no embedded server was started


def test_with_a_shared_database_the_keys_are_required_and_none_is_written(tmp_path, engine):
    result = summaries_cli("accounts", "create", env=_env(tmp_path, drop=("AUTH_TOKEN_KEYS",)))
    _one_line_naming(result, "AUTH_TOKEN_KEYS")
    assert not (tmp_path / "data" / "auth-token.keys").exists()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM accounts").scalar() == 0


def test_a_bad_setting_stops_a_command_with_one_line(tmp_path):
    _one_line_naming(summaries_cli("jobs", env=_env(tmp_path, SUMMARY_LEASE_S="five")), "SUMMARY_LEASE_S")
    _one_line_naming(summaries_cli("jobs", env=_env(tmp_path, REDIS_URL_FILE=str(tmp_path / "nowhere"))),
                     "REDIS_URL_FILE")
    _one_line_naming(summaries_cli("jobs", env=_env(tmp_path, REDIS_SENTINEL_PASSWORD_FILE=str(tmp_path / "nowhere"))),
                     "REDIS_SENTINEL_PASSWORD_FILE")
    # The sentinels' password beside a Redis URL (the test run's): refused, and never echoed.
    result = summaries_cli("jobs", env=_env(tmp_path, REDIS_SENTINEL_PASSWORD="s3ntinel-pw"))
    _one_line_naming(result, "REDIS_SENTINEL_PASSWORD")
    assert "s3ntinel-pw" not in result.stderr + result.stdout
    _one_line_naming(summaries_cli("jobs", env=_env(tmp_path, DATABASE_STATEMENT_TIMEOUT_MS="3000000000")),
                     "DATABASE_STATEMENT_TIMEOUT_MS")


PROCFILE_COMMANDS = {
    "web": processes.web("127.0.0.1:0"),
    "worker": processes.worker("worker"),
    "callbacks": processes.worker("callbacks"),
    "scheduler": processes.scheduler("/tmp/never-written"),
}
READS_TOKENS = ("web", "callbacks")  # the others need no AUTH_TOKEN_KEYS


@pytest.mark.slow
@pytest.mark.parametrize("name, missing", [
    (name, missing) for name in PROCFILE_COMMANDS for missing in ("DATABASE_URL", "REDIS_URL", "AUTH_TOKEN_KEYS")
    if missing != "AUTH_TOKEN_KEYS" or name in READS_TOKENS])
def test_every_procfile_process_refuses_to_start_without_what_it_needs(tmp_path, name, missing):
    command = PROCFILE_COMMANDS[name]
    env = _env(tmp_path, drop=(missing,), **{k: v for k, v in SERVERS.items() if k != missing})
    result = subprocess.run(processes.python_m(command), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if line.startswith("summaries ")]
    assert result.returncode == 2, output
    assert len(lines) == 1 and missing in lines[0], output
    assert "Traceback" not in output
    assert not (tmp_path / "data" / "pg").exists() and not (tmp_path / "data" / "auth-token.keys").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name, command", [("worker", processes.worker("worker")),
                                           ("scheduler", processes.scheduler("/tmp/never-written"))])
def test_a_data_directory_it_cannot_write_stops_a_worker_or_the_scheduler_in_one_line(tmp_path, name, command):
    env = _env(tmp_path, **SERVERS, SUMMARIES_DATA_DIR="/proc/no-such-dir")
    result = subprocess.run(processes.python_m(command), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("summaries ")]
    assert result.returncode == 2 and len(lines) == 1, result.stdout + result.stderr
    assert lines[0].startswith(f"summaries {name}: configuration: SUMMARIES_DATA_DIR")


def test_the_readme_table_is_the_declared_settings():
    """Each setting is declared once (shared/platform/config.py Settings); README's table follows it:
    every variable there, each with the default the declaration gives, and nothing undeclared."""
    import re
    from pathlib import Path

    from shared.platform.config import declared

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| variable | default | meaning |"):]
    table = table[:table.index("\n\n")]
    rows = {}
    for line in table.splitlines()[2:]:
        first, rest = line.split("|")[1], "|".join(line.split("|")[2:])
        for variable in re.findall(r"`([A-Z_0-9]+)`", first):
            rows[variable] = rest
    procfile_only = {"PORT", "WEB_CONCURRENCY", "WORKER_CONCURRENCY", "CALLBACK_CONCURRENCY", "CONSOLE_HOST",
                     "CONSOLE_PORT"}
    variables = {variable for variable, _, _ in declared()}
    assert set(rows) - procfile_only == variables, (set(rows) - procfile_only ^ variables)
    for variable, default, _ in declared():
        if default is None or isinstance(default, bool):
            continue
        shown = f"{default:g}" if isinstance(default, (int, float)) else str(default)
        assert f"`{shown}`" in rows[variable].split("|")[0], (variable, shown, rows[variable][:80])


def test_settings_are_typed_and_refuse_bad_values():
    settings = Settings.from_env({"SUMMARY_LEASE_S": "60", "DATABASE_URL": " "})
    assert settings.summary_lease_s == 60 and settings.database_url is None and settings.sweep_interval_s == 30
    with pytest.raises(SettingError, match="SUMMARY_LEASE_S"):
        Settings.from_env({"SUMMARY_LEASE_S": "five"})
