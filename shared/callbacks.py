"""The StatusCallback event: its parameters, Twilio's signature, and the outbox row that carries it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from urllib.parse import urlencode, urlsplit

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.formats import iso_date, rfc2822
from shared.models import CallbackDelivery, FeedbackSummary
from shared.representations import summary_resource


def event_params(summary: FeedbackSummary) -> dict[str, str]:
    """The SPEC's parameters, from the summary as the API shows it; absent values are empty strings."""
    resource = summary_resource(summary)

    def text(value) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)

    return {
        "AccountSid": summary.account_sid,
        "FeedbackSummarySid": summary.sid,
        "Status": summary.status,
        "StartDate": iso_date(summary.start_date),
        "EndDate": iso_date(summary.end_date),
        "IncludeSubaccounts": text(summary.include_subaccounts),
        "CallCount": text(resource["call_count"]),
        "CallFeedbackCount": text(resource["call_feedback_count"]),
        "QualityScoreAverage": text(resource["quality_score_average"]),
        "QualityScoreMedian": text(resource["quality_score_median"]),
        "QualityScoreStandardDeviation": text(resource["quality_score_standard_deviation"]),
        "Issues": text(resource["issues"]),
        "DateCreated": rfc2822(summary.date_created),
        "DateUpdated": rfc2822(summary.date_updated),
    }


def request_target(url: str, method: str, params: dict[str, str]) -> tuple[str, dict[str, str] | None]:
    """The URL to request and the form body: GET carries the parameters in the query string."""
    if method == "GET":
        return url + ("&" if urlsplit(url).query else "?") + urlencode(params), None
    return url, params


def signature(auth_token: str, url: str, post_params: dict[str, str] | None) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + name1 + value1 + ...)), names sorted; for GET
    the url already holds the query string and there are no POST parameters."""
    payload = url + "".join(name + post_params[name] for name in sorted(post_params or {}))
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def add_delivery(session: Session, summary: FeedbackSummary, max_attempts: int) -> bool:
    """Queue the summary's callback in the caller's transaction; False when it has no StatusCallback."""
    if not summary.status_callback:
        return False
    statement = insert(CallbackDelivery).values(
        summary_sid=summary.sid, account_sid=summary.account_sid, url=summary.status_callback,
        host=(urlsplit(summary.status_callback).hostname or "").lower(), method=summary.status_callback_method,
        params=event_params(summary), idempotency_token=uuid.uuid4().hex, attempt_limit=max_attempts,
    ).on_conflict_do_nothing(index_elements=[CallbackDelivery.summary_sid])
    session.execute(statement)
    return True

