"""A summary's timeline for operators (`summaries show`): one row per thing that happened to it."""

from __future__ import annotations

import getpass
import os

from sqlalchemy import insert
from sqlalchemy.orm import Session

from shared.models import SummaryEvent


def record(session: Session, summary_sid: str, kind: str, actor: str | None = None, **detail) -> None:
    """Add an event in the caller's transaction (which has just written the summary's row)."""
    detail = {name: value for name, value in detail.items() if value is not None}
    session.execute(insert(SummaryEvent).values(summary_sid=summary_sid, kind=kind, actor=actor,
                                                detail=detail or None))


def operator() -> str:
    """Who is acting from the command line, for the record of operator actions."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"operator:{user}@{os.uname().nodename}"
