"""Status changes, each one guarded UPDATE ... WHERE status = :expected, so a repeat does nothing.

Each move is one statement: the guarded UPDATE and the timeline's event row in one data-modifying
CTE, built once at import (and checked there against status.py's table). On an autocommit
connection that is one round trip and one commit (the compute task's claim, and its result when
there is no callback to add); in a caller's transaction (a Session or a Connection that has begun
one), it joins that transaction.
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


def _move_statement(assignments: str, guard: str, kind: str, detail: str = "NULL"):
    """UPDATE the summary where `guard` holds and record `kind` in its timeline, in one statement;
    answers the row as it is after the move (every column), or nothing."""
    return text(f"""
WITH moved AS (UPDATE feedback_summaries SET {assignments} WHERE sid = :sid AND {guard} RETURNING *),
event AS (INSERT INTO summary_events (summary_sid, kind, actor, detail) SELECT sid, {kind}, :actor, {detail} FROM moved)
SELECT {_COLUMNS} FROM moved""").columns(*_TABLE.c)


def _status_move(expected: SummaryStatus, target: SummaryStatus, assignments: str = "", guard: str = "",
                 detail: str = "NULL"):
    """A move from `expected` to `target`, refused here, at import, unless status.py's table allows it:
    the table governs the statements the workers run."""
    if not can_transition(expected, target):
        raise IllegalTransition(f"{expected.value} -> {target.value}")
    return _move_statement(f"status = '{target.value}', date_updated = now(){assignments}",
                           f"status = '{expected.value}'{guard}", f"'{target.value}'", detail)


QUEUED, IN_PROGRESS = SummaryStatus.QUEUED, SummaryStatus.IN_PROGRESS
_OWNED = " AND claimed_by = :actor"
CLAIM = _status_move(QUEUED, IN_PROGRESS,
                     f", claimed_by = :actor, lease_expires_at = {_LEASE}, attempts = attempts + 1")
# Another worker after an expired lease, or this message's own retry: a change of owner, not of status.
TAKE_OVER = _move_statement(f"claimed_by = :actor, lease_expires_at = {_LEASE}, attempts = attempts + 1",
                            "status = 'in-progress' AND (lease_expires_at < now() OR claimed_by = :actor)",
                            "'reclaimed'", "jsonb_build_object('attempt', attempts)")
COMPLETE = _status_move(IN_PROGRESS, SummaryStatus.COMPLETED, ", lease_expires_at = NULL, " + ", ".join(
    f"{column} = :{column}" for column in RESULT_COLUMNS), _OWNED).bindparams(bindparam("issues", type_=JSONB))
FAIL = _status_move(IN_PROGRESS, SummaryStatus.FAILED, ", lease_expires_at = NULL, failure_reason = :reason", _OWNED,
                    "jsonb_build_object('reason', CAST(:reason AS text))")
# The operator's retry, the one move outside the table (SPEC: no other transitions happen by
# themselves). The failure reason stays in the timeline, not on the row.
RETRY_FAILED = _move_statement("status = 'queued', date_updated = now(), failure_reason = NULL, claimed_by = NULL, "
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


_STATUS_ONLY = _move_statement("status = :target, date_updated = now()", "status = :expected", ":target")


def transition(db, sid: str, expected: SummaryStatus, target: SummaryStatus, actor: str | None = None) -> Row | None:
    """Move sid from expected to target (nothing else changes), and record it; None when it was not
    in `expected` (or is gone). Refuses what the lifecycle does not allow. (Any move, for the tests
    of the table; the workers run the statements above, checked by the same table.)"""
    if not can_transition(expected, target):
        raise IllegalTransition(f"{expected.value} -> {target.value}")
    params = {"sid": sid, "expected": expected.value, "target": target.value, "actor": actor}
    return db.execute(_STATUS_ONLY, params).one_or_none()
