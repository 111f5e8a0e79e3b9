"""Accounts and their one level of subaccounts."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.models import Account
from shared.sids import new_auth_token, new_sid, ACCOUNT


class AccountError(ValueError):
    """Raised when an account cannot be created as asked (unknown parent, or a nested subaccount)."""


def create_account(session: Session, friendly_name: str | None = None, parent_sid: str | None = None) -> Account:
    if parent_sid is not None:
        parent = session.get(Account, parent_sid)
        if parent is None:
            raise AccountError(f"parent account {parent_sid} does not exist")
        if parent.parent_sid is not None:
            raise AccountError(f"{parent_sid} is a subaccount; subaccounts cannot have subaccounts")
    sid = new_sid(ACCOUNT)
    account = Account(sid=sid, parent_sid=parent_sid, friendly_name=friendly_name or f"Account {sid[-6:]}",
                      auth_token=new_auth_token())
    session.add(account)
    session.flush()
    return account
