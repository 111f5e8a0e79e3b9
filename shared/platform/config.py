"""Settings, read once from the environment: one line per variable, typed, with its default."""

from __future__ import annotations

import functools
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit


class SettingError(ValueError):
    """Raised when an environment variable holds a value of the wrong type."""


def _number(env: Mapping[str, str], name: str, default, kind, what: str):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingError(f"{name} must be {what}, got {raw!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    return _number(env, name, default, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    return _number(env, name, default, float, "a number")


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


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def _base_url(env: Mapping[str, str], name: str) -> str | None:
    """scheme://host[:port], nothing after it (a trailing slash is dropped)."""
    raw = env.get(name, "").strip().rstrip("/")
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.path or parts.query
                                                                                     or parts.fragment)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        valid = False
    if not valid:
        raise SettingError(f"{name} must be scheme://host[:port] (http or https, no path), got {raw!r}")
    return raw


def _port(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name, "").strip():
        return None
    port = _int(env, name, 0)
    if not 0 < port < 65536:
        raise SettingError(f"{name} must be a TCP port (1-65535), got {port}")
    return port


@dataclass(frozen=True)
class Settings:
    database_url: str | None  # unset: the embedded PostgreSQL in data_dir
    redis_url: str | None  # unset: the embedded Redis in data_dir
    data_dir: Path
    # Fernet keys for auth tokens at rest, newest first; empty: a key generated into data_dir.
    auth_token_keys: tuple[str, ...]
    metrics_dir: Path  # prometheus_client's multiprocess files, shared by this machine's processes
    worker_metrics_port: int | None  # a worker serves /metrics itself on this port (machines without an API)
    metrics_port: int | None  # the API serves /metrics on this port only, away from its public one
    max_body_bytes: int
    request_header_timeout_s: int  # the request line and headers must arrive within this (gunicorn keepalive)
    request_body_timeout_s: float  # and the body within this, or 408
    max_form_fields: int
    idempotency_window_s: int
    enqueue_timeout_s: float
    summary_lease_s: int
    sweep_interval_s: int
    log_level: str
    callback_allowed_networks: tuple  # CIDRs callbacks may reach although private or loopback
    callback_max_attempts: int
    callback_backoff_initial_s: float
    callback_backoff_max_s: float
    callback_connect_timeout_s: float
    callback_read_timeout_s: float
    callback_circuit_threshold: int  # consecutive failures to one host that open its circuit
    callback_circuit_cooldown_s: float
    callback_max_in_flight_per_host: int  # per destination address, across all workers
    callback_max_in_flight_per_account: int  # an account's fair share of the callback threads
    callback_attempt_deadline_s: float  # one attempt, all told: connect, TLS, headers and body
    create_rate_limit: str  # per account, in the `limits` notation: "100/second;2000/minute"
    public_base_url: str | None  # scheme://host[:port] Twilio uses to reach us, for checking its signatures
    twilio_api_base_url: str  # where `summaries calls sync` reads Twilio's Calls API
    # An API key and its secret for `calls sync`, used instead of the account's auth token when both are set.
    twilio_api_key: str | None
    twilio_api_secret: str | None
    # The database pool and PgBouncer (docs/pgbouncer.md). Off: psycopg never prepares a statement
    # (prepare_threshold=None), as a transaction-mode PgBouncer without max_prepared_statements needs.
    database_prepared_statements: bool
    database_pool_size: int  # connections each process keeps (a cap: opened only when used at once)
    database_max_overflow: int  # opened beyond those at peaks, closed when returned
    database_pool_timeout_s: float  # waiting this long for a connection is a transient error
    migration_database_url: str | None  # `summaries migrate` connects here when set (past PgBouncer)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        data_dir = Path(env.get("SUMMARIES_DATA_DIR", "") or ".data").absolute()
        return cls(
            database_url=_optional(env, "DATABASE_URL"),
            redis_url=_optional(env, "REDIS_URL"),
            data_dir=data_dir,
            auth_token_keys=_list(env, "AUTH_TOKEN_KEYS"),
            metrics_dir=Path(env.get("PROMETHEUS_MULTIPROC_DIR", "").strip() or data_dir / "metrics").absolute(),
            worker_metrics_port=_port(env, "WORKER_METRICS_PORT"),
            metrics_port=_port(env, "METRICS_PORT"),
            max_body_bytes=_int(env, "MAX_BODY_BYTES", 64 * 1024),
            request_header_timeout_s=_int(env, "REQUEST_HEADER_TIMEOUT_S", 5),
            request_body_timeout_s=_float(env, "REQUEST_BODY_TIMEOUT_S", 10.0),
            max_form_fields=_int(env, "MAX_FORM_FIELDS", 100),
            idempotency_window_s=_int(env, "IDEMPOTENCY_WINDOW_S", 24 * 3600),
            enqueue_timeout_s=_float(env, "ENQUEUE_TIMEOUT_S", 2.0),
            summary_lease_s=_int(env, "SUMMARY_LEASE_S", 300),
            sweep_interval_s=_int(env, "SWEEP_INTERVAL_S", 30),
            log_level=env.get("LOG_LEVEL", "") or "INFO",
            callback_allowed_networks=_networks(env, "CALLBACK_ALLOWED_NETWORKS"),
            # 12 attempts, 60 s doubling to a 6 h cap: the last is about 20 h after the first.
            callback_max_attempts=_int(env, "CALLBACK_MAX_ATTEMPTS", 12),
            callback_backoff_initial_s=_float(env, "CALLBACK_BACKOFF_INITIAL_S", 60.0),
            callback_backoff_max_s=_float(env, "CALLBACK_BACKOFF_MAX_S", 6 * 3600.0),
            callback_connect_timeout_s=_float(env, "CALLBACK_CONNECT_TIMEOUT_S", 5.0),
            callback_read_timeout_s=_float(env, "CALLBACK_READ_TIMEOUT_S", 10.0),
            callback_circuit_threshold=_int(env, "CALLBACK_CIRCUIT_THRESHOLD", 5),
            callback_circuit_cooldown_s=_float(env, "CALLBACK_CIRCUIT_COOLDOWN_S", 300.0),
            callback_max_in_flight_per_host=_int(env, "CALLBACK_MAX_IN_FLIGHT_PER_HOST", 32),
            callback_max_in_flight_per_account=_int(env, "CALLBACK_MAX_IN_FLIGHT_PER_ACCOUNT", 16),
            callback_attempt_deadline_s=_float(env, "CALLBACK_ATTEMPT_DEADLINE_S", 15.0),
            create_rate_limit=_rate(env, "CREATE_RATE_LIMIT", "100/second;3000/minute"),
            public_base_url=_base_url(env, "PUBLIC_BASE_URL"),
            twilio_api_base_url=_base_url(env, "TWILIO_API_BASE_URL") or "https://api.twilio.com",
            twilio_api_key=_optional(env, "TWILIO_API_KEY"),
            twilio_api_secret=_optional(env, "TWILIO_API_SECRET"),
            database_prepared_statements=_switch(env, "DATABASE_PREPARED_STATEMENTS", True),
            database_pool_size=_at_least(env, "DATABASE_POOL_SIZE", 5, 1),
            database_max_overflow=_at_least(env, "DATABASE_MAX_OVERFLOW", 5, 0),
            database_pool_timeout_s=_at_least(env, "DATABASE_POOL_TIMEOUT_S", 5.0, 0.1, _float),
            migration_database_url=_optional(env, "MIGRATION_DATABASE_URL"),
        )


@functools.cache
def get_settings() -> Settings:
    return Settings.from_env()


# Used by from_env for the database settings above; here, below it, to keep them in one place.
def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "true", "yes", "1"):
        return True
    if raw in ("off", "false", "no", "0"):
        return False
    raise SettingError(f"{name} must be on or off, got {raw!r}")


def _at_least(env: Mapping[str, str], name: str, default, low, read=_int):
    # SQLAlchemy reads pool_size 0 and max_overflow -1 as "no limit": never what a typo meant.
    value = read(env, name, default)
    if value < low:
        raise SettingError(f"{name} must be at least {low}, got {value}")
    return value
