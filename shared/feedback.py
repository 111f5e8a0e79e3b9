"""Writing a call's one feedback entry: insert, or replace its score and issues in place."""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.models import Call, CallFeedback


def upsert_feedback(session: Session, call: Call, quality_score: int, issues: list[str]) -> CallFeedback:
    """Posting again replaces the entry and moves date_updated, never date_created (the day the
    summaries count it by). The rollup trigger moves the old values out and the new ones in."""
    statement = insert(CallFeedback).values(
        call_sid=call.sid, account_sid=call.account_sid, quality_score=quality_score, issues=issues
    )
    statement = statement.on_conflict_do_update(
        index_elements=[CallFeedback.call_sid],
        set_={"quality_score": statement.excluded.quality_score, "issues": statement.excluded.issues,
              "date_updated": func.now()},
    )
    return session.scalars(statement.returning(CallFeedback), execution_options={"populate_existing": True}).one()
