"""The console's users (table console_users, written here only): created, listed, deleted and unlocked
with the CLI, checked by the console at sign-in. Not Twilio accounts. Roles: `viewer` sees
everything but secrets; `operator` also acts. Their failed sign-ins (console_sign_in_failures) are
counted here too.

Passwords are kept as scrypt hashes with a random salt (the standard library's hashlib.scrypt,
OpenSSL's): slow to try, never stored or logged in clear. A user without a password signs in only
through a trusted proxy's header (CONSOLE_TRUSTED_USER_HEADER).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from shared.errors import ActionRefused
from shared.models import ConsoleUser

ROLES = ("viewer", "operator")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS = 12, 1024
# scrypt's cost: 2^15 rounds of 8 x 128-byte blocks (32 MiB, about 150 ms here): RFC 7914's interactive
# logins tier, raised to today's OWASP minimum.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class User:
    name: str
    role: str
    has_password: bool
    session_key: str = ""

    @property
    def may_act(self) -> bool:
        return self.role == "operator"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=_SCRYPT_MAXMEM)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str | None) -> bool:
    try:
        scheme, n, r, p, salt, digest = (stored or "").split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n), r=int(r),
                               p=int(p), maxmem=_SCRYPT_MAXMEM, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


@functools.cache
def _decoy() -> str:
    """Checked against when the name is unknown, so that a wrong name costs as long as a wrong password
    (the time would otherwise tell which names exist)."""
    return hash_password(os.urandom(16).hex())


def check_password_rules(password: str) -> None:
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ActionRefused(f"a console password has {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters")


def create(session: Session, name: str, role: str, password: str | None) -> User:
    if not NAME.fullmatch(name):
        raise ActionRefused("a console user's name is 1 to 64 letters, digits and . _ @ + - (a letter or digit first)")
    if role not in ROLES:
        raise ActionRefused(f"a console user's role is one of {', '.join(ROLES)}")
    if password is not None:
        check_password_rules(password)
    if session.get(ConsoleUser, name) is not None:
        raise ActionRefused(f"console user {name} exists; delete it first to change its role or password")
    user = ConsoleUser(name=name, role=role, password_hash=hash_password(password) if password else None)
    session.add(user)
    session.flush()
    return _user(user)


def _user(row: ConsoleUser) -> User:
    return User(row.name, row.role, row.password_hash is not None, row.session_key)


def listing(session: Session) -> list[dict]:
    return [{"name": u.name, "role": u.role, "password": u.password_hash is not None, "created": u.date_created}
            for u in session.scalars(select(ConsoleUser).order_by(ConsoleUser.name))]


def delete(session: Session, name: str) -> bool:
    user = session.get(ConsoleUser, name)
    if user is None:
        return False
    session.delete(user)
    session.flush()
    return True


def find(session: Session, name: str) -> User | None:
    user = session.get(ConsoleUser, name) if NAME.fullmatch(name or "") else None
    return None if user is None else _user(user)


def end_sessions(session: Session, name: str) -> None:
    """Every session of the user ends (a sign-out): its cookies carry the key this replaces."""
    session.execute(update(ConsoleUser).where(ConsoleUser.name == name)
                    .values(session_key=text("gen_random_uuid()::text")))


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user, when the name exists, has a password and it is this one; else None, after as long."""
    user = session.get(ConsoleUser, name) if NAME.fullmatch(name or "") else None
    if user is None or user.password_hash is None:
        password_matches(password, _decoy())
        return None
    if not password_matches(password, user.password_hash):
        return None
    return _user(user)


# Failed sign-ins, counted in PostgreSQL (every console process sees the same counts, a restart forgets
# nothing) per user from an address, per address, and per user from anywhere, each in a fixed window
# started by its first attempt. The attempt is counted before the password is checked, in one
# statement: parallel guesses cannot slip past the limit. Limits, with `limit` CONSOLE_SIGN_IN_LIMIT:
# a user from one address `limit`; an address 4x (an office behind one NAT address); a user from
# anywhere 10x (a slow guess spread over many addresses). A stranger can block a name from their
# own address; blocking it everywhere takes 10x the failures, and `console-users unlock` lifts it.
SIGN_IN_WINDOW_S = 15 * 60
PER_ADDRESS_FACTOR, PER_USER_FACTOR = 4, 10
_ATTEMPT = text("""
INSERT INTO console_sign_in_failures AS f (key, failures, window_started)
SELECT key, 1, now() FROM unnest(CAST(:keys AS text[])) AS key
ON CONFLICT (key) DO UPDATE SET
  failures = CASE WHEN f.window_started < now() - make_interval(secs => :window) THEN 1 ELSE f.failures + 1 END,
  window_started = CASE WHEN f.window_started < now() - make_interval(secs => :window) THEN now()
                        ELSE f.window_started END
RETURNING key, failures, ceil(extract(epoch FROM window_started + make_interval(secs => :window) - now()))""")
_SUCCEEDED = text("""
WITH forgotten AS (DELETE FROM console_sign_in_failures WHERE key = ANY(CAST(:user_keys AS text[])))
UPDATE console_sign_in_failures SET failures = failures - 1 WHERE key = :address_key AND failures > 0""")
_PRUNE = text("DELETE FROM console_sign_in_failures WHERE window_started < now() - interval '1 day'")


def _sign_in_keys(name: str, address: str) -> dict[str, int]:
    """Each counter's key and its limit as a factor of CONSOLE_SIGN_IN_LIMIT."""
    user = name.lower()[:64]
    # `|` is in no user's name (NAME): one user's counters never share a prefix with another's.
    return {f"user:{user}|{address}": 1, f"address:{address}": PER_ADDRESS_FACTOR, f"user:{user}": PER_USER_FACTOR}


def sign_in(session: Session, name: str, password: str, address: str, limit: int) -> tuple[User | None, int | None]:
    """(the user, None) on success; (None, seconds to wait) when over a limit, the password not even
    checked; (None, None) for a wrong name or password."""
    keys = _sign_in_keys(name, address)
    counted = session.execute(_ATTEMPT, {"keys": list(keys), "window": SIGN_IN_WINDOW_S}).all()
    waits = [int(wait) for key, failures, wait in counted if failures > keys[key] * limit]
    if waits:
        return None, max(1, max(waits))
    user = authenticate(session, name, password)
    if user is not None:
        user_keys = [key for key in keys if key.startswith("user:")]
        session.execute(_SUCCEEDED, {"user_keys": user_keys, "address_key": f"address:{address}"})
        session.execute(_PRUNE)
    return user, None


def unlock(session: Session, name: str) -> int:
    """Forget the user's failed sign-ins, from every address; how many counters were dropped."""
    user = name.lower()[:64]
    return session.execute(text("DELETE FROM console_sign_in_failures "
                                "WHERE key = :key OR left(key, length(:prefix)) = :prefix"),
                           {"key": f"user:{user}", "prefix": f"user:{user}|"}).rowcount
