"""The console's users (table console_users, written here only): created, listed and deleted with the
CLI, checked by the console at sign-in. Not Twilio accounts. Roles: `viewer` sees everything but
secrets; `operator` also acts.

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

from sqlalchemy import select
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
    session.add(ConsoleUser(name=name, role=role, password_hash=hash_password(password) if password else None))
    session.flush()
    return User(name, role, password is not None)


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
    return None if user is None else User(user.name, user.role, user.password_hash is not None)


def authenticate(session: Session, name: str, password: str) -> User | None:
    """The user, when the name exists, has a password and it is this one; else None, after as long."""
    user = session.get(ConsoleUser, name) if NAME.fullmatch(name or "") else None
    if user is None or user.password_hash is None:
        password_matches(password, _decoy())
        return None
    if not password_matches(password, user.password_hash):
        return None
    return User(user.name, user.role, True)
