"""The StatusCallback event: the SPEC's parameters, fixed when the summary finishes."""

from __future__ import annotations

import json

from shared.formats import iso_date, rfc2822
from shared.models import FeedbackSummary
from shared.summaries.representation import summary_resource


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def event_params(summary: FeedbackSummary) -> dict[str, str]:
    """From the summary as the API shows it; absent values are empty strings."""
    resource = summary_resource(summary)
    return {
        "AccountSid": summary.account_sid,
        "FeedbackSummarySid": summary.sid,
        "Status": summary.status,
        "StartDate": iso_date(summary.start_date),
        "EndDate": iso_date(summary.end_date),
        "IncludeSubaccounts": _text(summary.include_subaccounts),
        "CallCount": _text(resource["call_count"]),
        "CallFeedbackCount": _text(resource["call_feedback_count"]),
        "QualityScoreAverage": _text(resource["quality_score_average"]),
        "QualityScoreMedian": _text(resource["quality_score_median"]),
        "QualityScoreStandardDeviation": _text(resource["quality_score_standard_deviation"]),
        "Issues": _text(resource["issues"]),
        "DateCreated": rfc2822(summary.date_created),
        "DateUpdated": rfc2822(summary.date_updated),
    }
