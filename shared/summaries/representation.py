"""A summary as the API returns it (and as its status callback reports it): exactly the fields of
Twilio's schema, in snake_case."""

from __future__ import annotations

from decimal import Decimal

from shared.formats import iso_date, rfc2822
from shared.models import FeedbackSummary
from shared.summaries.status import SummaryStatus


def _number(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def summary_resource(summary: FeedbackSummary) -> dict:
    completed = summary.status == SummaryStatus.COMPLETED.value
    return {
        "account_sid": summary.account_sid,
        "call_count": summary.call_count if completed else None,
        "call_feedback_count": summary.call_feedback_count if completed else None,
        "date_created": rfc2822(summary.date_created),
        "date_updated": rfc2822(summary.date_updated),
        "end_date": iso_date(summary.end_date),
        "include_subaccounts": summary.include_subaccounts,
        "issues": summary.issues if completed else None,
        "quality_score_average": _number(summary.quality_score_average) if completed else None,
        "quality_score_median": _number(summary.quality_score_median) if completed else None,
        "quality_score_standard_deviation": _number(summary.quality_score_standard_deviation) if completed else None,
        "sid": summary.sid,
        "start_date": iso_date(summary.start_date),
        "status": summary.status,
    }
