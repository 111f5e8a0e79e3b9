"""The one writer of `feedback_summaries`: a summary's creation (with its `created` event), its
status moves, its deletion and the operators' purge. Nothing else inserts, updates or deletes a
summary (tests/test_layout.py checks the code for it).

Each status move is one guarded UPDATE ... WHERE status = :expected, so a repeat does nothing, and
the timeline's event row with it, in one data-modifying CTE built once at import (and checked
there against status.py's table). On an autocommit connection that is one round trip and one
commit (the compute task's claim, and its result when there is no callback to add); in a caller's
transaction (a Session or a Connection that has begun one), it joins that transaction.
"""

from __future__ import annotations

from sqlalchemy import Row, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB

from shared.errors import IllegalTransition
from shared.models import FeedbackSummary
from shared.summaries.status import SummaryStatus, can_transition

_TABLE = FeedbackSummary.__table__
_COLUMNS = ", ".join(column.name for column in _TABLE.c)
_LEASE = "now() + make_interval(secs => :lease_s)"
RESULT_COLUMNS = ("call_count", "call_feedback_count", "quality_score_average", "quality_score_median",
                  "quality_score_standard_deviation", "issues")
CREATE_COLUMNS = ("sid", "account_sid", "request_id", "start_date", "end_date", "include_subaccounts",
                  "status_callback", "status_callback_method")

# The summary and its `created` event in one statement: a summary never exists without its event.
# On an autocommit connection it is committed when it returns (the API's create without an
# Idempotency-Key); in a transaction (with a key) it goes with the key's claim, or neither does.
_CREATE = text(f"""
WITH s AS (INSERT INTO feedback_summaries ({', '.join(CREATE_COLUMNS)})
           VALUES ({', '.join(':' + column for column in CREATE_COLUMNS)}) RETURNING *),
e AS (INSERT INTO summary_events (summary_sid, kind, actor, detail) SELECT sid, 'created', :request_id, :detail FROM s)
SELECT {_COLUMNS} FROM s""").columns(*_TABLE.c).bindparams(bindparam("detail", type_=JSONB))


def create(db, sid: str, account_sid: str, request_id: str | None, idempotency_key: str | None = None,
           **params) -> Row:
    """A queued summary (`params`: its window, IncludeSubaccounts and callback), every column back."""
    detail = {"idempotency_key": idempotency_key} if idempotency_key is not None else None
    return db.execute(_CREATE, {"sid": sid, "account_sid": account_sid, "request_id": request_id,
                                "detail": detail, **params}).one()


def _move_statement(assignments: str, guard: str, kind: str, detail: str = "NULL"):
    """UPDATE the summary where `guard` holds and record `kind` in its timeline, in one statement;
    answers the row as it is after the move (every column), or nothing."""
    return text(f"""
WITH moved AS (UPDATE feedback_summaries SET {assignments} WHERE sid = :sid AND {guard} RETURNING *),
event AS (INSERT INTO summary_events (summary_sid, kind, actor, detail) SELECT sid, {kind}, :actor, {detail} FROM moved)
SELECT {_COLUMNS} FROM moved""").columns(*_TABLE.c)


def _status_move(expected: SummaryStatus, target: SummaryStatus, assignments: str = "", guard: str = "",
                 detail: str = "NULL", by_operator: bool = False):
    """A move from `expected` to `target`, refused here, at import, unless status.py's table allows it:
    the table governs every statement that moves a summary."""
    if not can_transition(expected, target, by_operator):
        raise IllegalTransition(f"{expected.value} -> {target.value}")
    return _move_statement(f"status = '{target.value}', date_updated = now(){assignments}",
                           f"status = '{expected.value}'{guard}", f"'{target.value}'", detail)


QUEUED, IN_PROGRESS, FAILED = SummaryStatus.QUEUED, SummaryStatus.IN_PROGRESS, SummaryStatus.FAILED
_OWNED = " AND claimed_by = :actor"
CLAIM = _status_move(QUEUED, IN_PROGRESS,
                     f", claimed_by = :actor, lease_expires_at = {_LEASE}, attempts = attempts + 1")
# Another worker after an expired lease, or this message's own retry: a change of owner, not of status.
# An owner is `host/task id`; a retry of the message keeps its task id but may run on another worker
# (node), so it is recognised by the task id alone: it resumes at once instead of waiting out the
# lease its first run took (found by review).
TAKE_OVER = _move_statement(f"claimed_by = :actor, lease_expires_at = {_LEASE}, attempts = attempts + 1",
                            "status = 'in-progress' AND (lease_expires_at < now() OR claimed_by = :actor "
                            "OR split_part(claimed_by, '/', 2) = split_part(CAST(:actor AS text), '/', 2) "
                            "AND split_part(CAST(:actor AS text), '/', 2) <> '')",
                            "'reclaimed'", "jsonb_build_object('attempt', attempts)")
COMPLETE = _status_move(IN_PROGRESS, SummaryStatus.COMPLETED, ", lease_expires_at = NULL, " + ", ".join(
    f"{column} = :{column}" for column in RESULT_COLUMNS), _OWNED).bindparams(bindparam("issues", type_=JSONB))
FAIL = _status_move(IN_PROGRESS, FAILED, ", lease_expires_at = NULL, failure_reason = :reason", _OWNED,
                    "jsonb_build_object('reason', CAST(:reason AS text))")
# The operator's retry (status.py's OPERATOR_TRANSITIONS). The failure reason stays in the timeline,
# not on the row.
RETRY_FAILED = _status_move(FAILED, QUEUED, ", failure_reason = NULL, claimed_by = NULL, lease_expires_at = NULL",
                            by_operator=True)


def claim(db, sid: str, owner: str, lease_s: float) -> Row | None:
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
    """failed -> queued, by an operator (`actor`); None when it was not failed (or is gone)."""
    return db.execute(RETRY_FAILED, {"sid": sid, "actor": actor}).one_or_none()


_DELETE = text("DELETE FROM feedback_summaries WHERE sid = :sid AND account_sid = :account_sid")


def delete(db, sid: str, account_sid: str) -> bool:
    """The account's DELETE: the summary, its events, its key's claim and its delivery go (cascades)."""
    return db.execute(_DELETE, {"sid": sid, "account_sid": account_sid}).rowcount > 0


# One array parameter: an IN list binds one per SID, and a protocol message holds 65,535.
_PURGE = text("DELETE FROM feedback_summaries WHERE sid = ANY(:sids) AND status = 'failed'")


def purge_failed(db, sids: list[str]) -> int:
    """Delete those of these summaries that are failed (their events and deliveries go with them)."""
    return db.execute(_PURGE, {"sids": list(sids)}).rowcount
