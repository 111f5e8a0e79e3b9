"""Feedback summaries: create (queued, committed, then enqueued), fetch, delete."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.errors import BadRequest, NotFound
from api.http import Request, Response
from shared.accounts.sids import SUMMARY, is_sid, new_sid
from shared.callbacks import url as callback_url
from shared.formats import EARLIEST_DATE, LATEST_DATE, parse_bool
from shared.models import FeedbackSummary, IdempotencyKey
from shared.platform import logs, metrics
from shared.platform.db import Outgoing, after_commit
from shared.summaries import lifecycle
from shared.summaries.representation import summary_resource

DATE_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_IDEMPOTENCY_KEY_CHARS = 255


@dataclass(frozen=True)
class CreateParams:
    start_date: dt.date
    end_date: dt.date
    include_subaccounts: bool
    status_callback: str | None
    status_callback_method: str

    def fingerprint(self) -> str:
        canonical = json.dumps(asdict(self), default=str, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _date(request: Request, name: str) -> dt.date:
    raw = request.param(name)
    if raw is None or not raw.strip():
        raise BadRequest(f"Missing required parameter {name} in the post body")
    raw = raw.strip()
    try:
        if not DATE_FORMAT.fullmatch(raw):
            raise ValueError
        value = dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date in YYYY-MM-DD format") from None
    if not EARLIEST_DATE <= value <= LATEST_DATE:
        raise BadRequest(f"{name} must be between {EARLIEST_DATE} and {LATEST_DATE}")
    return value


# The document (api/openapi.json) says the same: blank means absent, spaces and tabs around are ignored,
# the method's letters in either case. Any other whitespace is refused, as the document's patterns do.
BLANK = " \t"


def _callback_url(raw: str | None) -> str | None:
    raw = (raw or "").strip(BLANK)
    if not raw:
        return None
    refused = callback_url.problem(raw)
    if refused:
        raise BadRequest(refused)
    return raw


def parse_create(request: Request) -> CreateParams:
    start_date, end_date = _date(request, "StartDate"), _date(request, "EndDate")
    if end_date < start_date:
        raise BadRequest("EndDate must be on or after StartDate")
    raw_include = request.param("IncludeSubaccounts")
    include = False
    if raw_include is not None and raw_include.strip():
        include = parse_bool(raw_include)
        if include is None:
            raise BadRequest("IncludeSubaccounts must be true or false")
    method = (request.param("StatusCallbackMethod") or "").strip(BLANK) or "POST"
    if not method.isascii() or method.upper() not in ("GET", "POST"):  # "poſt".upper() is "POST"
        raise BadRequest("StatusCallbackMethod must be GET or POST")
    method = method.upper()
    return CreateParams(start_date, end_date, include, _callback_url(request.param("StatusCallback")), method)


def _idempotency_key(request: Request) -> str | None:
    key = request.header("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters")
    return key


def _claim_key(session: Session, account, key: str, params: CreateParams, summary_sid: str, window_s: int) -> bool:
    """Record the key for this summary; False if a live one exists (an expired one is taken over)."""
    values = dict(account_sid=account.sid, key=key, request_fingerprint=params.fingerprint(), summary_sid=summary_sid)
    statement = insert(IdempotencyKey).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[IdempotencyKey.account_sid, IdempotencyKey.key],
        set_={**{k: statement.excluded[k] for k in ("request_fingerprint", "summary_sid")}, "date_created": func.now()},
        where=IdempotencyKey.date_created < func.now() - dt.timedelta(seconds=window_s),
    )
    return session.execute(statement.returning(IdempotencyKey.key)).first() is not None


def _replay(session: Session, account, key: str, params: CreateParams) -> Response | None:
    """The original summary for this key, or None if it was deleted since the key was claimed."""
    existing = session.get(IdempotencyKey, (account.sid, key))
    if existing is None:
        return None
    if existing.request_fingerprint != params.fingerprint():
        raise BadRequest("Idempotency-Key was already used with different parameters")
    summary = session.get(FeedbackSummary, existing.summary_sid)
    return Response(201, summary_resource(summary), [("Idempotent-Replayed", "true")])


def create(request: Request, account) -> Response:
    services = request.services
    params = parse_create(request)
    key = _idempotency_key(request)
    if key is None:
        # Nothing to replay, so nothing to count after: counted first, and a create over the limit
        # never reaches the database. The limit is the caller's (a parent creating on its
        # subaccounts' paths spends its own).
        services.check_create_rate(request.caller.sid)
        # One statement on the request's autocommit connection, committed when it returns; then its message.
        summary = lifecycle.create(request.connection, new_sid(SUMMARY), account.sid, request.request_id,
                                   **asdict(params))
        Outgoing(services.enqueue_summary, (summary.sid,))()
    else:
        summary = _create_with_key(request, account, key, params)
        if isinstance(summary, Response):
            return summary
    metrics.SUMMARIES_CREATED.inc()
    logs.add(summary_sid=summary.sid)
    return Response(201, summary_resource(summary))


def _create_with_key(request: Request, account, key: str, params: CreateParams):
    """The summary, created and committed with its key; or the Response replaying the key's summary."""
    session, services = request.session, request.services
    # Two rounds at most: a key whose summary is deleted between our insert and our read is free again.
    for _ in range(2):
        # In the session's transaction, with its `created` event: committed with the key's claim, or
        # rolled back with it.
        summary = lifecycle.create(session, new_sid(SUMMARY), account.sid, request.request_id,
                                   idempotency_key=key, **asdict(params))
        window_s = services.settings.idempotency_window_s
        if _claim_key(session, account, key, params, summary.sid, window_s):
            break
        session.rollback()
        replayed = _replay(session, account, key, params)
        if replayed is not None:
            return replayed
    # Counted only now: a refused request or an idempotent replay uses none of the limit. The limit
    # is the caller's, so a parent creating on its subaccounts' paths spends its own.
    services.check_create_rate(request.caller.sid)
    after_commit(session, services.enqueue_summary, summary.sid)
    session.commit()
    return summary


def _owned_summary(request: Request, account, sid: str) -> FeedbackSummary:
    # A malformed SID names nothing; checked first, so odd bytes (a NUL) never reach the database.
    summary = request.session.get(FeedbackSummary, sid) if is_sid(sid, SUMMARY) else None
    if summary is None or summary.account_sid != account.sid:
        raise NotFound(request.path)
    return summary


def fetch(request: Request, account, Sid: str) -> Response:
    return Response(200, summary_resource(_owned_summary(request, account, Sid)))


def delete(request: Request, account, Sid: str) -> Response:
    # One statement, guarded by the account: a SID of another account (or none) deletes nothing, a 404.
    if not is_sid(Sid, SUMMARY) or not lifecycle.delete(request.connection, Sid, account.sid):
        raise NotFound(request.path)
    return Response(204)
