"""HTTP Basic auth and the subaccount rules of the SPEC."""

from __future__ import annotations

import base64
import hmac
from typing import NamedTuple

from sqlalchemy import text

from api.errors import NotFound, Unauthorized
from shared.accounts.secrets import token_hash
from shared.accounts.sids import ACCOUNT, is_sid
from shared.models import Account

MAX_AUTHORIZATION_CHARS = 512  # a SID and a token take 96 in Basic; anything much longer is not ours
# Compared against when there is no such account or secondary token: no token hashes to it.
_NO_TOKEN = "-" * 64


class Caller(NamedTuple):
    """An account as the handlers need it: who it is and whose subaccount."""

    sid: str
    parent_sid: str | None


# One primary-key lookup of the four columns the check needs, on the request's connection: no ORM
# object, no identity map, no session transaction (its BEGIN and COMMIT were two more round trips).
# Typed (.columns): SQLAlchemy then keeps the result's description with the compiled statement
# instead of reading it from the cursor on every execution.
_accounts = Account.__table__.c
CREDENTIALS = text("SELECT sid, parent_sid, auth_token_hash, secondary_token_hash FROM accounts WHERE sid = :sid"
                   ).columns(_accounts.sid, _accounts.parent_sid, _accounts.auth_token_hash,
                             _accounts.secondary_token_hash)
PARENT = text("SELECT sid, parent_sid FROM accounts WHERE sid = :sid").columns(_accounts.sid, _accounts.parent_sid)


def authenticate(request, authorization: str | None) -> Caller:
    if not authorization:
        raise Unauthorized("Authentication Error - No credentials provided")
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        raise Unauthorized("Authentication Error - malformed credentials")
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Unauthorized("Authentication Error - Basic credentials required")
    try:
        # binascii.Error for bad base64; ValueError for non-ASCII text (a header in a strange encoding).
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise Unauthorized("Authentication Error - malformed credentials") from None
    sid, separator, token = decoded.partition(":")
    if not separator:
        raise Unauthorized("Authentication Error - malformed credentials")
    account = request.connection.execute(CREDENTIALS, {"sid": sid}).first() if is_sid(sid, ACCOUNT) else None
    presented = token_hash(token)
    primary = account.auth_token_hash if account is not None else _NO_TOKEN
    secondary = (account.secondary_token_hash if account is not None else None) or _NO_TOKEN
    # Both compared, always, in constant time: a miss costs what a hit costs.
    matches = hmac.compare_digest(presented, primary) | hmac.compare_digest(presented, secondary)
    if account is None or not matches:
        raise Unauthorized()
    return Caller(account.sid, account.parent_sid)


def authorize(request, caller: Caller, account_sid: str, path: str) -> Caller:
    """The account of the path, if the caller may act on it: itself, or a parent on its subaccount."""
    if account_sid == caller.sid:
        return caller
    target = request.connection.execute(PARENT, {"sid": account_sid}).first() if is_sid(account_sid, ACCOUNT) else None
    if target is not None and target.parent_sid == caller.sid:
        return Caller(target.sid, target.parent_sid)
    raise NotFound(path)
