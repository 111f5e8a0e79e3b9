"""Status changes, each one guarded UPDATE ... WHERE status = :expected, so a repeat does nothing.

Each move is one statement: the guarded UPDATE and the timeline's event row in one data-modifying
CTE, prepared once at import. On an autocommit connection that is one round trip and one commit
(the compute task's claim, and its result when there is no callback to add); in a caller's
transaction (a Session or a Connection that has begun one), it joins that transaction.
"""

from __future__ import annotations

from sqlalchemy import Row, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from shared.models import FeedbackSummary
from shared.summaries.status import SummaryStatus, can_transition

_TABLE = FeedbackSummary.__table__
_COLUMNS = ", ".join(column.name for column in _TABLE.c)
_LEASE = "now() + make_interval(secs => :lease_s)"
RESULT_COLUMNS = ("call_count", "call_feedback_count", "quality_score_average", "quality_score_median",
                  "quality_score_standard_deviation", "issues")


class IllegalTransition(ValueError):
    """Raised when code asks for a status change the lifecycle does not allow."""


def _move(assignments: str, guard: str, kind: str, detail: str = "NULL"):
    """UPDATE the summary where `guard` holds and record `kind` in its timeline, in one statement;
    answers the row as it is after the move (every column), or nothing."""
    return text(f"""
WITH moved AS (UPDATE feedback_summaries SET {assignments} WHERE sid = :sid AND {guard} RETURNING *),
event AS (INSERT INTO summary_events (summary_sid, kind, actor, detail) SELECT sid, {kind}, :actor, {detail} FROM moved)
SELECT {_COLUMNS} FROM moved""").columns(*_TABLE.c)


_OWNED = "status = 'in-progress' AND claimed_by = :actor"
CLAIM = _move(f"status = 'in-progress', date_updated = now(), claimed_by = :actor, lease_expires_at = {_LEASE}, "
              "attempts = attempts + 1", "status = 'queued'", "'in-progress'")
# Another worker after an expired lease, or this message's own retry: a change of owner, not of status.
TAKE_OVER = _move(f"claimed_by = :actor, lease_expires_at = {_LEASE}, attempts = attempts + 1",
                  "status = 'in-progress' AND (lease_expires_at < now() OR claimed_by = :actor)", "'reclaimed'",
                  "jsonb_build_object('attempt', attempts)")
COMPLETE = _move("status = 'completed', date_updated = now(), lease_expires_at = NULL, "
                 + ", ".join(f"{column} = :{column}" for column in RESULT_COLUMNS), _OWNED, "'completed'"
                 ).bindparams(bindparam("issues", type_=JSONB))
FAIL = _move("status = 'failed', date_updated = now(), lease_expires_at = NULL, failure_reason = :reason", _OWNED,
             "'failed'", "jsonb_build_object('reason', CAST(:reason AS text))")
# The failure reason stays in the timeline, not on the row.
RETRY_FAILED = _move("status = 'queued', date_updated = now(), failure_reason = NULL, claimed_by = NULL, "
                     "lease_expires_at = NULL", "status = 'failed'", "'queued'")


def claim(db, sid: str, owner: str, lease_s: int) -> Row | None:
    """queued -> in-progress for owner; or take over an in-progress one whose lease expired or is ours.
    `db` is a Connection or a Session."""
    params = {"sid": sid, "actor": owner, "lease_s": lease_s}
    return db.execute(CLAIM, params).one_or_none() or db.execute(TAKE_OVER, params).one_or_none()


def complete(db, sid: str, owner: str, result: dict) -> Row | None:
    """in-progress -> completed with the result's columns, if owner still holds the claim."""
    return db.execute(COMPLETE, {"sid": sid, "actor": owner, **result}).one_or_none()


def fail(db, sid: str, owner: str, reason: str) -> Row | None:
    """in-progress -> failed, if owner still holds the claim."""
    return db.execute(FAIL, {"sid": sid, "actor": owner, "reason": reason}).one_or_none()


def retry_failed(db, sid: str, actor: str) -> Row | None:
    """failed -> queued, by an operator: the one move outside the workers' table (SPEC: no other
    transitions happen by themselves)."""
    return db.execute(RETRY_FAILED, {"sid": sid, "actor": actor}).one_or_none()


_PLAIN = _move("status = :target, date_updated = now()", "status = :expected", ":target")


def transition(db, sid: str, expected: SummaryStatus, target: SummaryStatus, actor: str | None = None) -> Row | None:
    """Move sid from expected to target (nothing else changes), and record it; None when it was not
    in `expected` (or is gone). Refuses what the lifecycle does not allow."""
    if not can_transition(expected, target):
        raise IllegalTransition(f"{expected.value} -> {target.value}")
    params = {"sid": sid, "expected": expected.value, "target": target.value, "actor": actor}
    return db.execute(_PLAIN, params).one_or_none()
