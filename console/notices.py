"""What an action says it did, carried to the page it redirects to (`?done=`): signed, so a link from
elsewhere cannot put words of its own in the console's mouth, and good for a few minutes only."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

from shared.accounts.secrets import derived_keys

MAX_AGE_S = 300


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(reversed(derived_keys("console notices"))), salt="console-notice")


def write(message: str, user: str) -> str:
    return _serializer().dumps([user, message])


def read(query: dict[str, str], user: str | None) -> str | None:
    """The message, for the user whose action wrote it only (a link passed to another shows nothing)."""
    raw = query.get("done")
    if not raw or user is None:
        return None
    try:
        written_for, message = _serializer().loads(raw, max_age=MAX_AGE_S)
    except (BadSignature, ValueError, TypeError):  # SignatureExpired is a BadSignature too
        return None
    return str(message) if written_for == user else None
