"""Status changes, each one guarded UPDATE ... WHERE status = :expected, so a repeat does nothing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, or_, update
from sqlalchemy.orm import Session

from shared.models import FeedbackSummary
from shared.summaries.events import record
from shared.summaries.status import SummaryStatus, can_transition


class IllegalTransition(ValueError):
    """Raised when code asks for a status change the lifecycle does not allow."""


def transition(session: Session, sid: str, expected: SummaryStatus, target: SummaryStatus,
               *conditions, actor: str | None = None, **values) -> FeedbackSummary | None:
    """Move sid from expected to target, and record it; None when it was not in `expected` (or is gone)."""
    if not can_transition(expected, target):
        raise IllegalTransition(f"{expected.value} -> {target.value}")
    return _move(session, sid, expected, target, conditions, actor, values)


def _move(session: Session, sid: str, expected: SummaryStatus, target: SummaryStatus, conditions, actor, values):
    statement = (
        update(FeedbackSummary)
        .where(FeedbackSummary.sid == sid, FeedbackSummary.status == expected.value, *conditions)
        .values(status=target.value, date_updated=func.now(), **values)
        .returning(FeedbackSummary)
    )
    moved = session.scalars(statement, execution_options={"populate_existing": True}).one_or_none()
    if moved is not None:
        detail = {"reason": values["failure_reason"]} if values.get("failure_reason") else {}
        record(session, sid, target.value, actor, **detail)
    return moved


def retry_failed(session: Session, sid: str, actor: str) -> FeedbackSummary | None:
    """failed -> queued, by an operator: the one move outside the workers' table (SPEC: no other
    transitions happen by themselves). The failure reason stays in the timeline, not on the row."""
    return _move(session, sid, SummaryStatus.FAILED, SummaryStatus.QUEUED, (), actor,
                 dict(failure_reason=None, claimed_by=None, lease_expires_at=None))


def claim(session: Session, sid: str, owner: str, lease_s: int) -> FeedbackSummary | None:
    """queued -> in-progress for owner; or take over an in-progress one whose lease expired or is ours.

    Taking over is a change of owner, not of status: the summary stays in-progress.
    """
    lease = func.now() + dt.timedelta(seconds=lease_s)
    claimed = transition(session, sid, SummaryStatus.QUEUED, SummaryStatus.IN_PROGRESS, actor=owner,
                         claimed_by=owner, lease_expires_at=lease, attempts=FeedbackSummary.attempts + 1)
    if claimed is not None:
        return claimed
    statement = (
        update(FeedbackSummary)
        .where(
            FeedbackSummary.sid == sid,
            FeedbackSummary.status == SummaryStatus.IN_PROGRESS.value,
            or_(FeedbackSummary.lease_expires_at < func.now(), FeedbackSummary.claimed_by == owner),
        )
        .values(claimed_by=owner, lease_expires_at=lease, attempts=FeedbackSummary.attempts + 1)
        .returning(FeedbackSummary)
    )
    taken = session.scalars(statement, execution_options={"populate_existing": True}).one_or_none()
    if taken is not None:
        # Another worker after an expired lease, or this message's own retry.
        record(session, sid, "reclaimed", owner, attempt=taken.attempts)
    return taken
