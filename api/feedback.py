"""Call feedback: one entry per call; posting again replaces it and moves date_updated only.

Feedback may race its call: a backend posts it right after hang-up, before Twilio's status callback
for the call has reached us. The call is then recorded from the post, as provisional, and the
status callback confirms it (or, should Twilio name another account, moves it there, and this
feedback, posted under the wrong account, is dropped)."""

from __future__ import annotations

import re

from sqlalchemy import Row, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.errors import BadRequest, NotFound
from api.http import Request, Response
from shared.accounts.sids import CALL, is_sid
from shared.formats import rfc2822
from shared.models import FEEDBACK_ISSUES, Call, CallFeedback

SCORE = re.compile(r"[1-5]")


def feedback_resource(feedback: CallFeedback | Row) -> dict:
    return {
        "account_sid": feedback.account_sid,
        "date_created": rfc2822(feedback.date_created),
        "date_updated": rfc2822(feedback.date_updated),
        "issues": list(feedback.issues),
        "quality_score": feedback.quality_score,
        "sid": feedback.call_sid,
    }


# Plain SQL, not the ORM's insert().on_conflict_do_update(): that one was compiled anew on every
# request (SQLAlchemy does not cache it) and loaded an ORM object: 1.7 of a request's 5.8 ms.
UPSERT_FEEDBACK = text("""
INSERT INTO call_feedback AS f (call_sid, account_sid, quality_score, issues)
VALUES (:call_sid, :account_sid, :quality_score, CAST(:issues AS text[]))
ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid, quality_score = excluded.quality_score,
    issues = excluded.issues, date_updated = now()
RETURNING f.call_sid, f.account_sid, f.quality_score, f.issues, f.date_created, f.date_updated""")


# The common case, a call we know of and of this account, in one statement on an autocommit
# connection: the call's row locked (FOR SHARE, see _call) and the entry written in the same
# transaction, no ORM, no BEGIN and COMMIT. No row back: no such call yet, or another account's;
# the transaction of _call and upsert_feedback then decides, as it always did.
UPSERT_OWN_CALL_FEEDBACK = text("""
WITH c AS (SELECT sid, account_sid FROM calls WHERE sid = :call_sid AND account_sid = :account_sid FOR SHARE)
INSERT INTO call_feedback AS f (call_sid, account_sid, quality_score, issues)
SELECT c.sid, c.account_sid, :quality_score, CAST(:issues AS text[]) FROM c
ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid, quality_score = excluded.quality_score,
    issues = excluded.issues, date_updated = now()
RETURNING f.call_sid, f.account_sid, f.quality_score, f.issues, f.date_created, f.date_updated""").columns(
    *(CallFeedback.__table__.c[name] for name in ("call_sid", "account_sid", "quality_score", "issues", "date_created",
                                                  "date_updated")))


def upsert_feedback(session: Session, call: Call, quality_score: int, issues: list[str]) -> Row:
    """Posting again replaces the entry and moves date_updated, never date_created (the day the
    summaries count it by). The rollup trigger records the old values and the new ones (0007)."""
    return session.execute(UPSERT_FEEDBACK, {"call_sid": call.sid, "account_sid": call.account_sid,
                                             "quality_score": quality_score, "issues": issues}).one()


def _call(request: Request, account, call_sid: str, provisional: bool = False) -> Call:
    """The account's call; with `provisional`, a call Twilio has not told us of yet is recorded from
    this post (its start: now) for Twilio's status callback to confirm (shared/migrations 0006)."""
    if not is_sid(call_sid, CALL):  # names nothing; odd bytes (a NUL) never reach the database
        raise NotFound(request.path)
    # A write holds the call's row (FOR SHARE) until it commits: a status callback moving the call to
    # another account waits for it, and its trigger then drops this feedback; or the move went first,
    # and this post sees the call's new account (a 404). Feedback never outlives a move under the
    # wrong account.
    lock = {"read": True} if provisional else None
    call = request.session.get(Call, call_sid, with_for_update=lock)
    if call is None and provisional:
        call = request.session.scalars(
            insert(Call).values(sid=call_sid, account_sid=account.sid, start_time=func.now(), provisional=True)
            .on_conflict_do_nothing().returning(Call)
        ).one_or_none() or request.session.get(Call, call_sid, populate_existing=True,
                                               with_for_update=lock)  # inserted meanwhile
    if call is None or call.account_sid != account.sid:
        raise NotFound(request.path)
    return call


def fetch(request: Request, account, CallSid: str) -> Response:
    _call(request, account, CallSid)
    feedback = request.session.get(CallFeedback, CallSid)
    if feedback is None:
        raise NotFound(request.path)
    return Response(200, feedback_resource(feedback))


def parse_issues(values: list[str]) -> list[str]:
    issues: list[str] = []
    for value in values:
        issue = value.strip()
        if issue not in FEEDBACK_ISSUES:
            raise BadRequest(f"Issue must be one of {', '.join(FEEDBACK_ISSUES)}; got {issue[:64]!r}")
        if issue not in issues:
            issues.append(issue)
    return issues


def update(request: Request, account, CallSid: str) -> Response:
    raw_score = request.param("QualityScore")
    if raw_score is None or not raw_score.strip():
        raise BadRequest("Missing required parameter QualityScore in the post body")
    if not SCORE.fullmatch(raw_score.strip()):
        raise BadRequest("QualityScore must be an integer from 1 to 5")
    issues = parse_issues(request.params("Issue"))
    if not is_sid(CallSid, CALL):  # names nothing; odd bytes (a NUL) never reach the database
        raise NotFound(request.path)
    # Counted once the post is valid, as creates are: every one writes, and one for an unknown call
    # records a provisional call (400 posts at 268/s, each a call counted, before this).
    request.services.check_feedback_rate(request.caller.sid)
    feedback = request.connection.execute(UPSERT_OWN_CALL_FEEDBACK, {
        "call_sid": CallSid, "account_sid": account.sid, "quality_score": int(raw_score), "issues": issues}).first()
    if feedback is None:
        call = _call(request, account, CallSid, provisional=True)
        feedback = upsert_feedback(request.session, call, int(raw_score), issues)
        request.session.commit()
    return Response(200, feedback_resource(feedback))
