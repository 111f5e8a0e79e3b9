"""`summaries calls show CA…`: what the summaries count for a call, and why. The call (its account
and UTC day), its feedback entry (its score and issues, the day it counts on, and what last wrote
it: the call's annotation or a Feedback post or import), and its annotation, each value with the
feedback issue it reports. So an operator can answer "why does this call count as a 2"."""

from __future__ import annotations

import json

import datetime as dt

from sqlalchemy import Connection, text

from shared.calls.annotations import (
    CONNECTIVITY_ISSUE_FEEDBACK,
    FIELDS,
    QUALITY_ISSUE_FEEDBACK,
    SPAM_FEEDBACK,
    Annotation,
)
from shared.safe_text import safe

_DETAILS = text(f"""
SELECT c.sid, c.account_sid, c.start_time, c.provisional,
       f.account_sid AS feedback_account_sid, f.quality_score, f.issues, f.date_created AS feedback_created,
       f.date_updated AS feedback_updated,
       {", ".join(f"a.{name}" for name in FIELDS)}, a.date_created AS annotation_created,
       a.date_updated AS annotation_updated
FROM calls c LEFT JOIN call_feedback f ON f.call_sid = c.sid LEFT JOIN call_annotations a ON a.call_sid = c.sid
WHERE c.sid = :sid""")


def _reports(annotation: Annotation) -> list[str]:
    """Each annotation value that reports a feedback issue, as `value -> issue`."""
    found = [f"QualityIssues {issue} -> {QUALITY_ISSUE_FEEDBACK[issue]}" for issue in annotation.quality_issues or ()
             if issue in QUALITY_ISSUE_FEEDBACK]
    if annotation.connectivity_issue in CONNECTIVITY_ISSUE_FEEDBACK:
        found.append(f"ConnectivityIssue {annotation.connectivity_issue} -> "
                     f"{CONNECTIVITY_ISSUE_FEEDBACK[annotation.connectivity_issue]}")
    if annotation.spam:
        found.append(f"Spam true -> {SPAM_FEEDBACK}")
    return found


def _day(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).date().isoformat()


def describe(connection: Connection, call_sid: str) -> dict | None:
    row = connection.execute(_DETAILS, {"sid": call_sid}).first()
    if row is None:
        return None
    found = {"sid": row.sid, "account_sid": row.account_sid, "start_time": row.start_time.isoformat(),
             "counted_as_call_on": _day(row.start_time), "provisional": row.provisional, "feedback": None,
             "annotation": None}
    annotation = Annotation.from_row([getattr(row, name) for name in FIELDS]) if row.annotation_created else None
    if annotation is not None:
        found["annotation"] = {**{name: getattr(annotation, name) for name in FIELDS},
                               "quality_issues": list(annotation.quality_issues or ()) or None,
                               "date_created": row.annotation_created.isoformat(),
                               "date_updated": row.annotation_updated.isoformat(),
                               "reports": _reports(annotation)}
    if row.quality_score is not None:
        # An annotation writes the entry in its own transaction: the same now() in both rows. A later
        # Feedback post (or import) moves the entry's date_updated alone.
        by_annotation = annotation is not None and row.annotation_updated == row.feedback_updated
        found["feedback"] = {"quality_score": row.quality_score, "issues": list(row.issues),
                             "account_sid": row.feedback_account_sid,
                             "date_created": row.feedback_created.isoformat(),
                             "date_updated": row.feedback_updated.isoformat(),
                             "counted_as_feedback_on": _day(row.feedback_created),
                             "last_written_by": "annotation" if by_annotation else "feedback post or import"}
    return found


def _when(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def lines(found: dict) -> list[str]:
    """The human form of describe()'s answer."""
    shown = [f"{found['sid']}  account {found['account_sid']}  started {_when(found['start_time'])} UTC"
             + ("  provisional (known only from a feedback post or an annotation so far)" if found["provisional"]
                else "")]
    feedback, annotation = found["feedback"], found["annotation"]
    if feedback is None:
        shown.append("  feedback    none: the call counts as a call only")
    else:
        writer = "the annotation below" if feedback["last_written_by"] == "annotation" else \
            "a Feedback post or an import"
        shown.append(f"  feedback    score {feedback['quality_score']}, issues "
                     f"{', '.join(feedback['issues']) or 'none'}; given {_when(feedback['date_created'])}, "
                     f"last written {_when(feedback['date_updated'])} by {writer}")
    shown.append(f"  counted     as a call of {found['account_sid']} on {found['counted_as_call_on']}"
                 + (f"; as feedback on {feedback['counted_as_feedback_on']}" if feedback else "") + " (UTC days)")
    if annotation is None:
        shown.append("  annotation  none")
        return shown
    values = "  ".join(f"{name} {safe(_shown(annotation[name]))}" for name in FIELDS)
    shown.append(f"  annotation  {values}")
    shown.append(f"              updated {_when(annotation['date_updated'])}; reports "
                 + ("; ".join(annotation["reports"]) or "no feedback issue")
                 + ("" if annotation["call_score"] is not None else "; no call_score: it writes no feedback"))
    return shown


def _shown(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(value)
    if isinstance(value, str):
        # Always quoted, every character past ASCII spelled out: a comment cannot pass itself off as
        # other fields (no-break spaces) or as an escape the operator would read as one.
        return json.dumps(value, ensure_ascii=True)
    return str(value)
