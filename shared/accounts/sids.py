"""Twilio SIDs: a two-letter prefix and 32 lowercase hex digits."""

from __future__ import annotations

import re
import secrets

ACCOUNT, CALL, SUMMARY = "AC", "CA", "FS"
_PATTERNS = {prefix: re.compile(rf"{prefix}[0-9a-f]{{32}}") for prefix in (ACCOUNT, CALL, SUMMARY)}
_AUTH_TOKEN = re.compile(r"[0-9a-f]{32}")


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def is_sid(value: str, prefix: str) -> bool:
    return _PATTERNS[prefix].fullmatch(value) is not None


def new_auth_token() -> str:
    return secrets.token_hex(16)


def is_auth_token(value: str) -> bool:
    """Twilio's shape: 32 lowercase hex digits."""
    return _AUTH_TOKEN.fullmatch(value) is not None
