"""Who is asking: a signed session cookie (or a trusted proxy's header), its CSRF token, its expiry,
and the limit on failed sign-ins.

The cookie holds {user, signed-in time, CSRF token}, signed with a key derived from AUTH_TOKEN_KEYS
(shared/accounts/secrets.py): nothing to configure, rotated with them. itsdangerous stamps each
signature with its time: a cookie unused for CONSOLE_SESSION_IDLE_S no longer verifies (each page
signs it again), and one older than CONSOLE_SESSION_MAX_S since sign-in ends whatever its use.
HttpOnly, SameSite=Strict, Secure over HTTPS. Every session, signed in or not, has a CSRF token;
every POST must carry it (console/app.py). The user is looked up on every request: a deleted user's
session ends at once.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import text
from sqlalchemy.orm import Session as DbSession

from shared.accounts.secrets import derived_keys
from shared.operator import users
from shared.platform.config import Settings

COOKIE = "cfs_console"
SIGN_IN_WINDOW_S = 15 * 60
PER_ADDRESS_FACTOR = 4  # an office behind one NAT address has several operators


@dataclass
class Session:
    user: str | None
    signed_in_at: float
    csrf: str
    fresh: bool = False  # to be (re)sent as a cookie with this response

    def payload(self) -> dict:
        return {"u": self.user, "t": self.signed_in_at, "c": self.csrf}


def _serializer() -> URLSafeTimedSerializer:
    # itsdangerous signs with the last key and verifies with any: the newest AUTH_TOKEN_KEYS key last.
    return URLSafeTimedSerializer(list(reversed(derived_keys("console sessions"))), salt="console-session")


def new_session(user: str | None = None) -> Session:
    return Session(user, time.time(), secrets.token_urlsafe(32), fresh=True)


def read(raw: str | None, settings: Settings) -> Session:
    """The request's session; a new anonymous one when the cookie is missing, forged or expired."""
    if raw:
        try:
            data = _serializer().loads(raw, max_age=settings.console_session_idle_s)
            session = Session(data["u"], float(data["t"]), str(data["c"]))
            if time.time() - session.signed_in_at <= settings.console_session_max_s:
                session.fresh = True  # signed again with this response: its idle clock starts over
                return session
        except (BadSignature, SignatureExpired, KeyError, TypeError, ValueError):
            pass
    return new_session()


def cookie_header(session: Session, secure: bool, settings: Settings) -> tuple[str, str]:
    value = _serializer().dumps(session.payload())
    flags = f"Path=/; HttpOnly; SameSite=Strict; Max-Age={settings.console_session_max_s}"
    return "Set-Cookie", f"{COOKIE}={value}; {flags}{'; Secure' if secure else ''}"


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), presented.encode())


def trusted_user(environ: dict, settings: Settings) -> str | None:
    """The user a trusted proxy names, when the request came from one of CONSOLE_TRUSTED_PROXIES (its
    socket's address, never a forwarded one); None otherwise."""
    header = settings.console_trusted_user_header
    if not header or not settings.console_trusted_proxies:
        return None
    try:
        address = ipaddress.ip_address(environ.get("REMOTE_ADDR") or "")
    except ValueError:
        return None
    if not any(address in network for network in settings.console_trusted_proxies):
        return None
    value = environ.get("HTTP_" + header.upper().replace("-", "_"))
    return value.strip() if value else None


# Failed sign-ins, counted per user and per address in PostgreSQL (every console process sees the same
# counts; a restart forgets nothing): a fixed window per key, started by its first failure.
_COUNT = text("""
INSERT INTO console_sign_in_failures AS f (key, failures, window_started) VALUES (:key, 1, now())
ON CONFLICT (key) DO UPDATE SET
  failures = CASE WHEN f.window_started < now() - make_interval(secs => :window) THEN 1 ELSE f.failures + 1 END,
  window_started = CASE WHEN f.window_started < now() - make_interval(secs => :window) THEN now()
                        ELSE f.window_started END""")
_BLOCKED = text("""
SELECT ceil(extract(epoch FROM max(window_started) + make_interval(secs => :window) - now()))
FROM console_sign_in_failures
WHERE window_started >= now() - make_interval(secs => :window)
  AND ((key = :user_key AND failures >= :per_user) OR (key = :address_key AND failures >= :per_address))""")


def _keys(name: str, address: str) -> tuple[str, str]:
    return f"user:{name.lower()[:64]}", f"address:{address}"


def blocked_for_s(db: DbSession, name: str, address: str, settings: Settings) -> int | None:
    """Seconds until this user, from this address, may try again; None when they may now."""
    user_key, address_key = _keys(name, address)
    wait = db.execute(_BLOCKED, {"window": SIGN_IN_WINDOW_S, "user_key": user_key, "address_key": address_key,
                                 "per_user": settings.console_sign_in_limit,
                                 "per_address": settings.console_sign_in_limit * PER_ADDRESS_FACTOR}).scalar()
    return None if wait is None else max(1, int(wait))


def count_failure(db: DbSession, name: str, address: str) -> None:
    for key in _keys(name, address):
        db.execute(_COUNT, {"key": key, "window": SIGN_IN_WINDOW_S})


def forget_failures(db: DbSession, name: str) -> None:
    db.execute(text("DELETE FROM console_sign_in_failures WHERE key = :key"), {"key": _keys(name, "")[0]})


def sign_in(db: DbSession, name: str, password: str, address: str, settings: Settings
            ) -> tuple[users.User | None, int | None]:
    """(the user, None) on success; (None, seconds to wait) when over the limit, before any check;
    (None, None) for a wrong name or password (counted)."""
    wait = blocked_for_s(db, name, address, settings)
    if wait is not None:
        return None, wait
    user = users.authenticate(db, name, password)
    if user is None:
        count_failure(db, name, address)
    else:
        forget_failures(db, name)
    return user, None
