"""POST (update) and GET (fetch) /v1/Voice/{CallSid}/Annotation: Twilio's Voice Insights call
annotation, wire-compatible with the official libraries' `client.insights.v1.calls(sid).annotation()`
(SPEC, Call Annotations; docs/api.md).

No account in the path: the call must be the credentials' account's or, for a parent's credentials,
one of its subaccounts'; any other call is a 404. An update for a call not known yet records it as
provisional under the credentials' account, as a Feedback post does, for Twilio's status callback
or `calls sync` to confirm. An update changes only the parameters it carries; a parameter sent
empty clears its field (CallScore's clear also removes the call's feedback entry).
"""

from __future__ import annotations

import re

from api.errors import BadRequest, NotFound
from api.http import Request, Response
from shared.accounts.sids import CALL, is_sid
from shared.calls.annotations import FIELDS, Annotation, annotate, clears_score, read, write
from shared.models import ANNOTATION_TEXT_MAX_CHARS, ANSWERED_BY, CONNECTIVITY_ISSUES, QUALITY_ISSUES

SCORE = re.compile(r"[1-5]")
ECHOED_CHARS = 64  # of a refused value, in the message
DEFAULT_PORTS = {"http": "80", "https": "443"}


def _one_of(allowed: tuple[str, ...]):
    def parse(name: str, raw: str) -> str:
        if raw not in allowed:
            raise BadRequest(f"{name} must be one of {', '.join(allowed)}; got {raw[:ECHOED_CHARS]!r}")
        return raw
    return parse


def _quality_issues(name: str, raw: str) -> tuple[str, ...]:
    issues: list[str] = []
    for part in raw.split(","):
        issue = part.strip(" ")  # "latency, echo" as well
        if issue not in QUALITY_ISSUES:
            raise BadRequest(f"{name} must be one or more of {', '.join(QUALITY_ISSUES)}, comma-separated; got "
                             f"{issue[:ECHOED_CHARS]!r}")
        if issue not in issues:
            issues.append(issue)
    return tuple(issues)


def _spam(name: str, raw: str) -> bool:
    if not (raw.isascii() and raw.lower() in ("true", "false")):  # twilio 8.x sends True and False
        raise BadRequest(f"{name} must be true or false")
    return raw.lower() == "true"


def _call_score(name: str, raw: str) -> int:
    if not SCORE.fullmatch(raw):
        raise BadRequest(f"{name} must be an integer from 1 to 5, or empty to clear the score")
    return int(raw)


def _text(name: str, raw: str) -> str:
    if len(raw) > ANNOTATION_TEXT_MAX_CHARS:
        raise BadRequest(f"{name} must be at most {ANNOTATION_TEXT_MAX_CHARS} characters; got {len(raw)}")
    if "\x00" in raw:  # PostgreSQL's text cannot hold it
        raise BadRequest(f"{name} must not contain a NUL character")
    return raw


# Form parameter -> (field, parser of a non-empty value). Sent empty, a parameter clears its field.
# Values are taken exactly as api/openapi.json states them (no blanks around them but QualityIssues').
PARAMETERS = {
    "AnsweredBy": ("answered_by", _one_of(ANSWERED_BY)),
    "ConnectivityIssue": ("connectivity_issue", _one_of(CONNECTIVITY_ISSUES)),
    "QualityIssues": ("quality_issues", _quality_issues),
    "Spam": ("spam", _spam),
    "CallScore": ("call_score", _call_score),
    "Comment": ("comment", _text),
    "Incident": ("incident", _text),
}
assert {field for field, _ in PARAMETERS.values()} == set(FIELDS)


def _update(request: Request) -> dict[str, object]:
    """The fields the request carries, checked: a bad value is a 400 naming its parameter."""
    update = {}
    for name, (field, parse) in PARAMETERS.items():
        raw = request.param(name)
        if raw is not None:
            update[field] = parse(name, raw) if raw else None
    return update


def _url(request: Request, call_sid: str) -> str:
    """Where the resource is, as Twilio's `url` says for its own host: PUBLIC_BASE_URL's scheme and
    host behind a proxy, else the request's."""
    base = request.services.settings.public_base_url
    if not base:  # PEP 3333's URL reconstruction
        environ = request.environ
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST")
        if not host:
            port = environ.get("SERVER_PORT", "")
            host = environ.get("SERVER_NAME", "") + ("" if port == DEFAULT_PORTS.get(scheme) else f":{port}")
        base = f"{scheme}://{host}"
    return f"{base.rstrip('/')}/v1/Voice/{call_sid}/Annotation"


def annotation_resource(request: Request, call_sid: str, account_sid: str,
                        annotation: Annotation) -> dict:
    return {
        "call_sid": call_sid,
        "account_sid": account_sid,
        "answered_by": annotation.answered_by,
        "connectivity_issue": annotation.connectivity_issue,
        "quality_issues": list(annotation.quality_issues) if annotation.quality_issues is not None else None,
        "spam": annotation.spam,
        "call_score": annotation.call_score,
        "comment": annotation.comment,
        "incident": annotation.incident,
        "url": _url(request, call_sid),
    }


def update(request: Request, account, CallSid: str) -> Response:
    changes = _update(request)
    if not is_sid(CallSid, CALL):  # names nothing; odd bytes (a NUL) never reach the database
        raise NotFound(request.path)
    if not changes:
        # An update that carries nothing changes nothing (docs/api.md): answered as a fetch, with no
        # write: it re-asserted the annotation's score over a later Feedback post, and recorded a
        # provisional call for an unknown SID (found by review).
        return fetch(request, account, CallSid)
    # Counted as feedback posts are, in the same windows (FEEDBACK_RATE_LIMIT): an update writes the
    # call's feedback entry as a post does, and records a call as one does; two doors with a budget
    # each would double what an account may write. A refused (400) update spends nothing.
    request.services.check_feedback_rate(request.caller.sid)
    # The common case, a known call and no clear of the score, is one statement on the autocommit
    # connection; else a transaction (shared/calls/annotations.py says why).
    annotated = None if clears_score(changes) else write(request.connection, account.sid, CallSid, changes)
    if annotated is None:
        session = request.session
        annotated = annotate(session.connection(), account.sid, CallSid, changes)
        if annotated is None:
            raise NotFound(request.path)
        session.commit()
    return Response(200, annotation_resource(request, CallSid, *annotated))


def fetch(request: Request, account, CallSid: str) -> Response:
    if not is_sid(CallSid, CALL):
        raise NotFound(request.path)
    found = read(request.connection, account.sid, CallSid)
    if found is None:
        raise NotFound(request.path)
    return Response(200, annotation_resource(request, CallSid, *found))
