"""Settings, read once from the environment: one line per variable, typed, range-checked, with its
default. A process checks them all when it starts (`check_or_exit`) and stops with one line naming
the variable, not a traceback.

Explicit by default: without DATABASE_URL and REDIS_URL a process refuses to start rather than
quietly run on servers of its own that nothing else sees. Embedded servers (in the data directory)
are used only where asked: `summaries up` and `make run`, the tests, or SUMMARIES_EMBEDDED=1.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import math
import os
import stat
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, urlsplit

from shared.errors import SettingError


def _number(env: Mapping[str, str], name: str, default, kind, what: str, minimum, maximum):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingError(f"{name} must be {what}, got {raw!r}") from None
    if not (minimum <= value <= maximum) or value != value:  # the last: NaN
        upper = "" if maximum == math.inf else f" and at most {maximum}"
        raise SettingError(f"{name} must be at least {minimum}{upper}, got {raw!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1, maximum: float = math.inf) -> int:
    return _number(env, name, default, int, "an integer", minimum, maximum)


def _timeout_ms(env: Mapping[str, str], name: str, default: int) -> int:
    """Milliseconds, 0 for none; under 100 refused, as seconds written for milliseconds (`10`) would
    cut every statement."""
    value = _int(env, name, default, 0, PG_MAX_MS)
    if 0 < value < MIN_TIMEOUT_MS:
        raise SettingError(f"{name} must be 0 (none) or at least {MIN_TIMEOUT_MS} (milliseconds), got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.001,
           maximum: float = 7 * 24 * 3600) -> float:
    return _number(env, name, default, float, "a number", minimum, maximum)


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise SettingError(f"{name} must be true or false, got {raw!r}")


def _secret(env: Mapping[str, str], name: str) -> str | None:
    """NAME, or the contents of the file NAME_FILE names (a mounted secret); not both."""
    value, path = env.get(name, "").strip(), env.get(f"{name}_FILE", "").strip()
    if value and path:
        raise SettingError(f"{name} and {name}_FILE are both set; set one")
    if not path:
        return value or None
    value = _secret_file(f"{name}_FILE", path).strip()
    if not value:
        raise SettingError(f"{name}_FILE: {path!r} is empty")
    return value


SECRET_FILE_MAX_BYTES = 64 * 1024  # a URL or a few keys; a bigger file is the wrong file


def _secret_file(variable: str, path: str) -> str:
    """A regular file's text. A FIFO would wait for a writer (a start that hangs without a word) and a
    device such as /dev/zero never ends, so both are refused unopened; the open does not wait either
    (O_NONBLOCK) and is checked again (fstat), as the path may change in between."""
    not_regular = f"{variable}: {path!r} is not a regular file"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SettingError(not_regular)
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise SettingError(not_regular)
            data = file.read(SECRET_FILE_MAX_BYTES + 1)
    except OSError as error:
        raise SettingError(f"{variable}: cannot read {path!r}: {error.strerror or error}") from None
    if len(data) > SECRET_FILE_MAX_BYTES:
        raise SettingError(f"{variable}: {path!r} is larger than {SECRET_FILE_MAX_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8-sig")  # -sig: drops the byte order mark a Windows editor may write first
    except UnicodeDecodeError:  # not shown: its message names a byte of the secret
        raise SettingError(f"{variable}: {path!r} is not UTF-8 text") from None


def _service_url(name: str, value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        if parts.scheme not in SENTINEL_SCHEMES:  # several hosts: redis_connect.parse_url checks each
            parts.port  # noqa: B018  (raises on a malformed port, and on "h1:5432,h2:5432")
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in schemes:
        # Never echo the value: it may hold a password.
        hint = ("; several PostgreSQL hosts go in the query: postgresql://user@/db?host=h1,h2&port=5432,5432"
                if parts is None and "," in value.split("?")[0] else "")
        raise SettingError(f"{name} must be a URL starting {' or '.join(s + '://' for s in schemes)}{hint}")
    if parts.scheme in ("redis", "rediss") and any(key.lower().startswith("ssl")
                                                   for key, _ in parse_qsl(parts.query)):
        # redis-py would take them and quietly override REDIS_TLS_VERIFY (and its warning).
        raise SettingError(f"{name}: TLS options go in REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE "
                           "and REDIS_TLS_VERIFY, not in the URL's query")
    return value


def _fernet_keys(name: str, value: str | None) -> tuple[str, ...]:
    # Commas or whitespace between keys: a file of one key per line (as the data directory's own
    # key file) must give every key, not one key made of two lines.
    keys = tuple((value or "").replace(",", " ").split())
    for key in keys:
        try:
            # Strict: lenient base64 skips what is not base64 and would take "key1\nkey2" or "KEY=x".
            valid = len(base64.b64decode(key.encode("ascii"), altchars=b"-_", validate=True)) == 32
        except (ValueError, UnicodeEncodeError):
            valid = False
        if not valid:  # the key itself is never shown
            raise SettingError(f"{name} must be comma-separated Fernet keys (32 url-safe base64 bytes each); "
                               "make one with: python -c 'from cryptography.fernet import Fernet; "
                               "print(Fernet.generate_key().decode())'")
    return keys


SENTINEL_SCHEMES = ("sentinel", "sentinels")  # the second with TLS, as rediss://
POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
PG_MAX_MS = 2_147_483_647  # the largest timeout PostgreSQL takes, in milliseconds (INT_MAX)
MIN_TIMEOUT_MS = 100


def _log_level(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip().upper() or "INFO"
    if value not in _LOG_LEVELS:
        raise SettingError(f"{name} must be one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return value


def _log_format(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip().lower() or "json"
    if value not in ("json", "text"):
        raise SettingError(f"{name} must be json or text, got {value!r}")
    return value


def _header_name(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in raw):
        raise SettingError(f"{name} must be a header name (letters, digits and -), got {raw!r}")
    return raw


def _networks(env: Mapping[str, str], name: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in env.get(name, "").split(",") if part.strip())
    except ValueError as error:
        raise SettingError(f"{name} must be comma-separated CIDRs: {error}") from None


def _rate(env: Mapping[str, str], name: str, default: str) -> str:
    from limits import parse_many

    value = env.get(name, "").strip() or default
    try:
        parse_many(value)
    except ValueError:
        raise SettingError(f"{name} must look like '100/second;3000/minute', got {value!r}") from None
    return value


def _optional(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name, "").strip() or None


def _base_url(env: Mapping[str, str], name: str) -> str | None:
    """scheme://host[:port], nothing after it (a trailing slash is dropped)."""
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not (
            parts.path or parts.query or parts.fragment or parts.username is not None or parts.password is not None)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        valid = False
    if not valid:
        raise SettingError(f"{name} must be scheme://host[:port] (http or https, no path, no user or password)")
    return raw


def _port(env: Mapping[str, str], name: str) -> int | None:
    return _int(env, name, None, 1, 65535)


def _file(env: Mapping[str, str], name: str) -> str | None:
    path = _optional(env, name)
    if path is not None and not Path(path).is_file():
        raise SettingError(f"{name} must be a readable file, got {path!r}")
    return path


def _key_file(env: Mapping[str, str], name: str, cert_name: str) -> str | None:
    path = _file(env, name)
    if path is not None and _optional(env, cert_name) is None:
        raise SettingError(f"{name} needs {cert_name}, the certificate the key belongs to")
    return path


def _sentinel_master(env: Mapping[str, str], name: str, url: str | None) -> str | None:
    """The master's name, required with (and only meaningful for) a sentinel REDIS_URL, checked too."""
    from shared.platform.redis_connect import parse_url

    master = _optional(env, name)
    if url is not None and parse_url(url).sentinels and master is None:
        raise SettingError(f"{name} must name the master the sentinels of REDIS_URL watch")
    return master


def _sentinel_password(env: Mapping[str, str], name: str, url: str | None) -> str | None:
    """The sentinels' own password (their `requirepass`), or NAME_FILE's contents. Only for a sentinel
    REDIS_URL: beside a URL of Redis itself it would go unused, and was most likely meant for Redis."""
    from shared.platform.redis_connect import parse_url

    password = _secret(env, name)
    if password is not None and url is not None and not parse_url(url).sentinels:
        raise SettingError(f"{name} is the sentinels' password, but REDIS_URL names Redis itself; Redis's own "
                           "password goes in REDIS_URL")
    return password


# --- the declarations -----------------------------------------------------------------------------
# Each setting is declared once, as a field of Settings below: its environment variable, how it is
# read (type, default, bounds: the parser), and one line of doc. from_env() reads them in the order
# declared (a parser may look at the ones before it: the data directory, REDIS_URL), and
# tests/test_explicit_config.py holds README's table to the same variables and defaults.

Parser = Callable[[Mapping[str, str], str, dict], Any]


def setting(variable: str, parse: Parser, doc: str, secret: bool = False, default: Any = None) -> Any:
    """A field of Settings read from `variable` by `parse`. Its default is the parser's own (the
    factories below keep it), or `default` for a parser written out here; the README shows it. A
    secret is never in repr: a Settings in a log line or a traceback shows none."""
    return field(repr=not secret, metadata={"variable": variable, "parse": parse, "doc": doc,
                                            "default": getattr(parse, "default", default)})


def _with_default(parse: Parser, default: Any) -> Parser:
    parse.default = default
    return parse


def integer(default: int | None, minimum: int = 1, maximum: float = math.inf) -> Parser:
    return _with_default(lambda env, name, _: _int(env, name, default, minimum, maximum), default)


def number(default: float, minimum: float = 0.001, maximum: float = 7 * 24 * 3600) -> Parser:
    return _with_default(lambda env, name, _: _float(env, name, default, minimum, maximum), default)


def flag(default: bool = False) -> Parser:
    return _with_default(lambda env, name, _: _flag(env, name, default), default)


def timeout_ms(default: int) -> Parser:
    return _with_default(lambda env, name, _: _timeout_ms(env, name, default), default)


def rate(default: str) -> Parser:
    return _with_default(lambda env, name, _: _rate(env, name, default), default)


def server_url(*schemes: str) -> Parser:
    """A URL, or NAME_FILE's contents (a mounted secret)."""
    return lambda env, name, _: _service_url(name, _secret(env, name), schemes)


def optional(env: Mapping[str, str], name: str, _) -> str | None:
    return _optional(env, name)


def _data_dir(env: Mapping[str, str], name: str, _) -> Path:
    return Path(env.get(name, "") or ".data").absolute()


def _metrics_dir(env: Mapping[str, str], name: str, parsed: dict) -> Path:
    return Path(env.get(name, "").strip() or parsed["data_dir"] / "metrics").absolute()


@dataclass(frozen=True)
class Settings:
    database_url: str | None = setting(
        "DATABASE_URL", server_url(*POSTGRES_SCHEMES),
        "PostgreSQL; unset: the embedded PostgreSQL in data_dir, where embedded servers are allowed", secret=True)
    # No unix:// socket: redis-py takes it, but the Celery broker (kombu) does not.
    redis_url: str | None = setting(
        "REDIS_URL", server_url("redis", "rediss", *SENTINEL_SCHEMES),
        "Redis, the broker; unset: the embedded Redis in data_dir, likewise", secret=True)
    embedded: bool = setting("SUMMARIES_EMBEDDED", flag(),
                             "embedded servers may stand in for DATABASE_URL and REDIS_URL")
    data_dir: Path = setting("SUMMARIES_DATA_DIR", _data_dir, "the embedded servers' data and the heartbeats",
                             default="./.data")
    # Fernet keys for auth tokens at rest, newest first; empty: only with the embedded PostgreSQL, a
    # key generated into data_dir (one machine's database, one machine's key).
    auth_token_keys: tuple[str, ...] = setting(
        "AUTH_TOKEN_KEYS", lambda env, name, _: _fernet_keys(name, _secret(env, name)),
        "Fernet keys encrypting auth tokens at rest", secret=True)
    metrics_dir: Path = setting("PROMETHEUS_MULTIPROC_DIR", _metrics_dir,
                                "prometheus_client's multiprocess files, shared by this machine's processes")
    worker_metrics_port: int | None = setting(
        "WORKER_METRICS_PORT", integer(None, 1, 65535),
        "a worker serves /metrics itself on this port (machines without an API)")
    metrics_port: int | None = setting("METRICS_PORT", integer(None, 1, 65535),
                                       "the API serves /metrics on this port only, away from its public one")
    max_body_bytes: int = setting("MAX_BODY_BYTES", integer(64 * 1024), "larger request bodies are a 413")
    request_header_timeout_s: int = setting(
        "REQUEST_HEADER_TIMEOUT_S", integer(5, 1, 300),
        "the request line and headers must arrive within this (gunicorn keepalive)")
    request_body_timeout_s: float = setting("REQUEST_BODY_TIMEOUT_S", number(10.0),
                                            "and the body within this, or 408")
    max_form_fields: int = setting("MAX_FORM_FIELDS", integer(100, 1, 10_000), "form parameters per request")
    idempotency_window_s: int = setting("IDEMPOTENCY_WINDOW_S", integer(24 * 3600),
                                        "how long an Idempotency-Key answers with its summary")
    enqueue_timeout_s: float = setting("ENQUEUE_TIMEOUT_S", number(2.0),
                                       "how long the API waits for Redis when sending a job")
    summary_lease_s: int = setting("SUMMARY_LEASE_S", integer(300), "how long a worker's claim holds")
    sweep_interval_s: int = setting("SWEEP_INTERVAL_S", integer(30), "how often the sweeper runs")
    log_level: str = setting("LOG_LEVEL", lambda env, name, _: _log_level(env, name), "Python's log level",
                             default="INFO")
    log_format: str = setting("LOG_FORMAT", lambda env, name, _: _log_format(env, name),
                              "json (one object per line, for machines) or text (for a person at a terminal)",
                              default="json")
    # At most a third of `summaries health`'s default --max-age (60 s), so one late beat never fails it.
    heartbeat_interval_s: float = setting("HEARTBEAT_INTERVAL_S", number(5.0, 0.1, 20),
                                          "how often workers and the scheduler record that they live")
    callback_allowed_networks: tuple = setting(
        "CALLBACK_ALLOWED_NETWORKS", lambda env, name, _: _networks(env, name),
        "CIDRs callbacks may reach although private or loopback")
    # 12 attempts, 60 s doubling to a 6 h cap: the last is about 20 h after the first.
    callback_max_attempts: int = setting("CALLBACK_MAX_ATTEMPTS", integer(12), "attempts per delivery")
    callback_backoff_initial_s: float = setting("CALLBACK_BACKOFF_INITIAL_S", number(60.0),
                                                "the first retry's delay")
    callback_backoff_max_s: float = setting("CALLBACK_BACKOFF_MAX_S", number(6 * 3600.0), "the cap on any delay")
    callback_connect_timeout_s: float = setting("CALLBACK_CONNECT_TIMEOUT_S", number(5.0), "per connect")
    callback_read_timeout_s: float = setting("CALLBACK_READ_TIMEOUT_S", number(10.0), "per read")
    callback_circuit_threshold: int = setting(
        "CALLBACK_CIRCUIT_THRESHOLD", integer(5), "consecutive failures to one destination that open its circuit")
    callback_circuit_cooldown_s: float = setting("CALLBACK_CIRCUIT_COOLDOWN_S", number(300.0),
                                                 "how long an open circuit holds")
    callback_max_in_flight_per_host: int = setting("CALLBACK_MAX_IN_FLIGHT_PER_HOST", integer(32),
                                                   "attempts in flight per destination address, across workers")
    callback_max_in_flight_per_account: int = setting(
        "CALLBACK_MAX_IN_FLIGHT_PER_ACCOUNT", integer(16),
        "an account family's fair share of the callback threads, across workers")
    callback_attempt_deadline_s: float = setting("CALLBACK_ATTEMPT_DEADLINE_S", number(15.0),
                                                 "one attempt, all told: connect, TLS, headers and body")
    create_rate_limit: str = setting("CREATE_RATE_LIMIT", rate("100/second;3000/minute"),
                                     "creates per account, in the `limits` notation")
    # Feedback comes once per call: a busy contact centre's whole traffic, not a summary's.
    feedback_rate_limit: str = setting("FEEDBACK_RATE_LIMIT", rate("200/second;6000/minute"),
                                       "feedback posts per account, likewise")
    # 48 h: Twilio's status callback comes within seconds of the call; a daily `calls sync` is given a
    # day more.
    provisional_call_grace_s: int = setting(
        "PROVISIONAL_CALL_GRACE_S", integer(48 * 3600, 60),
        "an unconfirmed provisional call of an account with a call source is removed after this")
    public_base_url: str | None = setting("PUBLIC_BASE_URL", lambda env, name, _: _base_url(env, name),
                                          "scheme://host[:port] Twilio uses to reach us, for its signatures")
    twilio_api_base_url: str = setting(
        "TWILIO_API_BASE_URL", lambda env, name, _: _base_url(env, name) or "https://api.twilio.com",
        "where `summaries calls sync` reads Twilio's Calls API", default="https://api.twilio.com")
    # An API key and its secret for `calls sync`, used instead of the account's auth token when both are set.
    twilio_api_key: str | None = setting("TWILIO_API_KEY", optional, "an API key (SK…) for `calls sync`")
    twilio_api_secret: str | None = setting("TWILIO_API_SECRET", optional, "its secret", secret=True)
    # Redis over TLS (rediss:// or sentinels://) and through Sentinel, for every Redis client: the
    # broker, the in-flight markers, the callback guards and the rate limit (docs/redis.md).
    redis_tls_ca_file: str | None = setting("REDIS_TLS_CA_FILE", lambda env, name, _: _file(env, name),
                                            "the CA that signed Redis's certificate; unset: the system's")
    redis_tls_cert_file: str | None = setting("REDIS_TLS_CERT_FILE", lambda env, name, _: _file(env, name),
                                              "a client certificate, for a Redis that asks for one")
    redis_tls_key_file: str | None = setting(
        "REDIS_TLS_KEY_FILE", lambda env, name, _: _key_file(env, name, "REDIS_TLS_CERT_FILE"), "its key")
    redis_tls_verify: bool = setting("REDIS_TLS_VERIFY", flag(True),
                                     "false: TLS without checking Redis's certificate (logged as a warning)")
    redis_sentinel_master: str | None = setting(
        "REDIS_SENTINEL_MASTER", lambda env, name, parsed: _sentinel_master(env, name, parsed["redis_url"]),
        "the master's name at the sentinels, for a sentinel:// REDIS_URL")
    redis_sentinel_password: str | None = setting(
        "REDIS_SENTINEL_PASSWORD", lambda env, name, parsed: _sentinel_password(env, name, parsed["redis_url"]),
        "the sentinels' own password (requirepass), distinct from Redis's in the URL", secret=True)
    # The database pool and PgBouncer (docs/pgbouncer.md). Off: psycopg never prepares a statement
    # (prepare_threshold=None), as a transaction-mode PgBouncer without max_prepared_statements needs.
    database_prepared_statements: bool = setting("DATABASE_PREPARED_STATEMENTS", flag(True),
                                                 "off behind a PgBouncer that cannot keep them")
    # SQLAlchemy reads pool_size 0 and max_overflow -1 as "no limit": never what a typo meant.
    database_pool_size: int = setting("DATABASE_POOL_SIZE", integer(5, 1),
                                      "connections each process keeps (a cap: opened only when used at once)")
    database_max_overflow: int = setting("DATABASE_MAX_OVERFLOW", integer(5, 0),
                                         "opened beyond those at peaks, closed when returned")
    database_pool_timeout_s: float = setting("DATABASE_POOL_TIMEOUT_S", number(5.0, 0.1),
                                             "waiting this long for a connection is a transient error")
    # PostgreSQL's statement_timeout and idle_in_transaction_session_timeout for every connection of
    # the engine (shared/platform/db.py), sent as startup options; 0: none sent, whatever the server
    # (a role's setting, behind PgBouncer) says applies. Migrations never get them.
    # 10 s: the service's statements take milliseconds; longer is a wait for a lock. Above the
    # migrations' 5 s lock_timeout, so requests queued behind a migration waiting for its lock ride it
    # out; far below a load balancer's 60 s, so the client gets our 503, not its 504.
    database_statement_timeout_ms: int = setting("DATABASE_STATEMENT_TIMEOUT_MS", timeout_ms(10_000),
                                                 "PostgreSQL cancels a statement running longer")
    # 60 s: no transaction of ours waits on anything but the database for more than a Redis timeout
    # (ENQUEUE_TIMEOUT_S); idle longer, it is a bug or a stopped process holding locks.
    database_idle_in_transaction_timeout_ms: int = setting(
        "DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_MS", timeout_ms(60_000),
        "PostgreSQL closes a connection idle this long inside a transaction")
    # The operators' console (console/): sessions, sign-in limits, a proxy's single sign-on, bulk redelivery.
    console_session_idle_s: int = setting("CONSOLE_SESSION_IDLE_S", integer(30 * 60, 60),
                                          "a console session unused this long ends")
    console_session_max_s: int = setting("CONSOLE_SESSION_MAX_S", integer(12 * 3600, 60),
                                         "a console session ends this long after sign-in, used or not")
    console_sign_in_limit: int = setting("CONSOLE_SIGN_IN_LIMIT", integer(5),
                                         "failed console sign-ins per user per 15 minutes (4x that per address)")
    console_trusted_user_header: str | None = setting(
        "CONSOLE_TRUSTED_USER_HEADER", lambda env, name, _: _header_name(env, name),
        "the header a single sign-on proxy names the console user in (e.g. X-Forwarded-User)")
    console_trusted_proxies: tuple = setting(
        "CONSOLE_TRUSTED_PROXIES", lambda env, name, _: _networks(env, name),
        "CIDRs of those proxies: the header is believed from these addresses only")
    console_redelivery_max_rate: float = setting("CONSOLE_REDELIVERY_MAX_RATE", number(20.0, 0.1, 1000),
                                                 "the console's bulk redelivery sends at most this many a second")
    migration_database_url: str | None = setting(
        "MIGRATION_DATABASE_URL", server_url(*POSTGRES_SCHEMES),
        "`summaries migrate` connects here when set (past PgBouncer)", secret=True)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        parsed: dict[str, Any] = {}
        for declared in fields(cls):
            parsed[declared.name] = declared.metadata["parse"](env, declared.metadata["variable"], parsed)
        return cls(**parsed)


def declared() -> list[tuple[str, Any, str]]:
    """(variable, default as the README shows it, doc) of every setting, in declaration order."""
    return [(f.metadata["variable"], f.metadata["default"], f.metadata["doc"]) for f in fields(Settings)]


@functools.cache
def get_settings() -> Settings:
    return Settings.from_env()


def require_servers(settings: Settings) -> None:
    """A process that will use PostgreSQL and Redis: both named, or embedded servers asked for."""
    if settings.embedded:
        return
    for name, value in (("DATABASE_URL", settings.database_url), ("REDIS_URL", settings.redis_url)):
        if value is None:
            raise SettingError(f"{name} is not set (nor {name}_FILE); set it, or SUMMARIES_EMBEDDED=1 to use "
                               f"the embedded servers in {settings.data_dir}")


def require_keys(settings: Settings) -> None:
    """A process that encrypts or decrypts auth tokens. With a database of its own (the embedded one)
    a machine may keep its key in its data directory; a shared database needs the one key every
    machine has, or a worker elsewhere cannot read the tokens this one wrote."""
    if settings.auth_token_keys or settings.database_url is None:
        return
    hint = ""
    if (settings.data_dir / "auth-token.keys").exists():
        hint = f"; the key generated earlier on this machine is in {settings.data_dir / 'auth-token.keys'}"
    raise SettingError("AUTH_TOKEN_KEYS (or AUTH_TOKEN_KEYS_FILE) must be set when DATABASE_URL is: the same "
                       f"Fernet keys on every machine{hint}")


def require_writable(variable: str, directory: Path) -> None:
    """A directory the process will write to (metric samples, heartbeats): found unusable now, in
    one line, not later as a worker that loops on a misleading error (a read-only root in a
    container, where ./.data is the default)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".writable.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SettingError(f"{variable}: cannot write to {directory}: {error.strerror or error}") from None


def check_or_exit(process: str, servers: bool = True, keys: bool = True, heartbeats: bool = False) -> Settings:
    """Every setting read and checked as the process starts; a bad one stops it with one line."""
    try:
        settings = get_settings()
        if servers:
            require_servers(settings)
        if keys:
            require_keys(settings)
        require_writable("PROMETHEUS_MULTIPROC_DIR", settings.metrics_dir)
        if heartbeats:
            require_writable("SUMMARIES_DATA_DIR", settings.data_dir / "health")
    except SettingError as error:
        print(f"summaries {process}: configuration: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    return settings
