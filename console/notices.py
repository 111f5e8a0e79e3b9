"""What an action says it did, carried to the page it redirects to (`?done=`): signed, so a link from
elsewhere cannot put words of its own in the console's mouth, and good for a few minutes only."""

from __future__ import annotations

from itsdangerous import BadSignature, URLSafeTimedSerializer

from shared.accounts.secrets import derived_keys

MAX_AGE_S = 300


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(reversed(derived_keys("console notices"))), salt="console-notice")


def write(message: str) -> str:
    return _serializer().dumps(message)


def read(query: dict[str, str]) -> str | None:
    raw = query.get("done")
    if not raw:
        return None
    try:
        return str(_serializer().loads(raw, max_age=MAX_AGE_S))
    except BadSignature:  # SignatureExpired is one too
        return None
