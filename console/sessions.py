"""Who is asking: a signed session cookie (or a trusted proxy's header), its CSRF token, its expiry,
and the limit on failed sign-ins.

The cookie holds {user, signed-in time, CSRF token}, signed with a key derived from AUTH_TOKEN_KEYS
(shared/accounts/secrets.py): nothing to configure, rotated with them. itsdangerous stamps each
signature with its time: a cookie unused for CONSOLE_SESSION_IDLE_S no longer verifies (each page
signs it again), and one older than CONSOLE_SESSION_MAX_S since sign-in ends whatever its use.
HttpOnly, SameSite=Strict, Secure over HTTPS. Every session, signed in or not, has a CSRF token;
every POST must carry it (console/app.py). The user is looked up on every request, and the cookie
carries the user's session key (shared/operator/users.py): a sign-out replaces it, ending every
session of that user, and a deleted user's sessions end at once (a re-created one has a new key).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from shared.accounts.secrets import derived_keys
from shared.platform.config import Settings

COOKIE = "cfs_console"


@dataclass
class Session:
    user: str | None
    signed_in_at: float
    csrf: str
    key: str = ""  # the user's session key when it signed in
    fresh: bool = False  # to be (re)sent as a cookie with this response

    def payload(self) -> dict:
        return {"u": self.user, "t": self.signed_in_at, "c": self.csrf, "k": self.key}


def _serializer() -> URLSafeTimedSerializer:
    # itsdangerous signs with the last key and verifies with any: the newest AUTH_TOKEN_KEYS key last.
    return URLSafeTimedSerializer(list(reversed(derived_keys("console sessions"))), salt="console-session")


def new_session(user: str | None = None, key: str = "") -> Session:
    return Session(user, time.time(), secrets.token_urlsafe(32), key, fresh=True)


def read(raw: str | None, settings: Settings) -> Session:
    """The request's session; a new anonymous one when the cookie is missing, forged or expired."""
    if raw:
        try:
            data = _serializer().loads(raw, max_age=settings.console_session_idle_s)
            session = Session(data["u"], float(data["t"]), str(data["c"]), str(data.get("k", "")))
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
