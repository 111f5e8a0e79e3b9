"""Accounts and their one level of subaccounts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.accounts.sids import ACCOUNT, is_auth_token, is_sid, new_auth_token, new_sid
from shared.errors import AccountError
from shared.models import Account


def create_account(session: Session, friendly_name: str | None = None, parent_sid: str | None = None,
                   sid: str | None = None, auth_token: str | None = None) -> Account:
    """A new account; with `sid` and `auth_token`, the account as it is at Twilio (its identity kept,
    so a backend's Client(sid, token) and Twilio's signatures work unchanged), else new ones."""
    if sid is not None:
        if not is_sid(sid, ACCOUNT):
            raise AccountError(f"{sid[:40]!r} is not an account SID (AC and 32 lowercase hex digits)")
        if session.get(Account, sid) is not None:
            raise AccountError(f"account {sid} already exists")
        if sid == parent_sid:
            raise AccountError("an account cannot be its own parent")
    if auth_token is not None and not is_auth_token(auth_token):
        raise AccountError("the auth token must be 32 lowercase hex digits, as Twilio's are")
    if parent_sid is not None:
        parent = session.get(Account, parent_sid)
        if parent is None:
            raise AccountError(f"parent account {parent_sid} does not exist")
        if parent.parent_sid is not None:
            raise AccountError(f"{parent_sid} is a subaccount; subaccounts cannot have subaccounts")
    sid = sid or new_sid(ACCOUNT)
    account = Account(sid=sid, parent_sid=parent_sid, friendly_name=friendly_name or f"Account {sid[-6:]}",
                      auth_token=auth_token or new_auth_token())
    session.add(account)
    session.flush()
    return account


def rotate_token(session: Session, sid: str) -> str:
    """A new secondary token, valid alongside the primary until promoted (or replaced by another)."""
    account = _get(session, sid)
    account.secondary_token = new_auth_token()
    return account.secondary_token


def promote_token(session: Session, sid: str) -> None:
    """The secondary token becomes the primary; the old primary stops working at once."""
    account = _get(session, sid)
    if account.secondary_token_encrypted is None:
        raise AccountError(f"{sid} has no secondary token to promote; create one with rotate-token")
    account.auth_token_hash, account.auth_token_encrypted = account.secondary_token_hash, account.secondary_token_encrypted
    account.secondary_token = None


def delete_secondary(session: Session, sid: str) -> None:
    _get(session, sid).secondary_token = None


def _get(session: Session, sid: str) -> Account:
    account = session.get(Account, sid, with_for_update=True)
    if account is None:
        raise AccountError(f"account {sid} does not exist")
    return account


def reencrypt_all(session: Session) -> int:
    """Every stored token encrypted again with the newest key of AUTH_TOKEN_KEYS (after a key rotation)."""
    from shared.accounts.secrets import reencrypt

    accounts = session.scalars(select(Account).with_for_update()).all()
    for account in accounts:
        account.auth_token_encrypted = reencrypt(account.auth_token_encrypted)
        if account.secondary_token_encrypted:
            account.secondary_token_encrypted = reencrypt(account.secondary_token_encrypted)
    return len(accounts)
