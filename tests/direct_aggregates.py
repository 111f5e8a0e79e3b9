"""The reference for the summaries: the SPEC's numbers computed by PostgreSQL with aggregates over
the raw calls and feedback, with no rollups in between. The tests hold worker.rollups to it, and the
bench measures the rollups against it; production never runs it.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from shared.formats import round4
from shared.models import Call, CallFeedback
from worker.rollups import SummaryResult, issue_list, scope


def window(start_date: dt.date, end_date: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[StartDate 00:00 UTC, EndDate + 1 day 00:00 UTC)"""
    utc = dt.timezone.utc
    return (dt.datetime.combine(start_date, dt.time(), utc),
            dt.datetime.combine(end_date + dt.timedelta(days=1), dt.time(), utc))


def compute(session: Session, account_sid: str, include_subaccounts: bool,
            start_date: dt.date, end_date: dt.date) -> SummaryResult:
    accounts = scope(session, account_sid, include_subaccounts)
    low, high = window(start_date, end_date)
    call_count = session.scalar(
        select(func.count()).where(Call.account_sid.in_(accounts), Call.start_time >= low, Call.start_time < high)
    )
    in_window = (CallFeedback.account_sid.in_(accounts), CallFeedback.date_created >= low,
                 CallFeedback.date_created < high)
    score = CallFeedback.quality_score
    count, average, median, deviation = session.execute(
        select(func.count(), func.avg(score), func.percentile_cont(0.5).within_group(score), func.stddev_pop(score))
        .where(*in_window)
    ).one()
    # call_feedback JOIN unnest(call_feedback.issues) AS issue(value) ON true: PostgreSQL joins a
    # set-returning function laterally, one row per issue of each entry.
    issue = func.unnest(CallFeedback.issues).table_valued("value").render_derived(name="issue")
    issue_counts = session.execute(
        select(issue.c.value, func.count()).select_from(CallFeedback).join(issue, true())
        .where(*in_window).group_by(issue.c.value)
    ).all()
    return SummaryResult(
        call_count=call_count,
        call_feedback_count=count,
        quality_score_average=round4(average),
        # percentile_cont answers in float8; a median of integers is exact there (n or n.5).
        quality_score_median=round4(Decimal(str(median))) if median is not None else None,
        quality_score_standard_deviation=round4(deviation),
        issues=issue_list([tuple(row) for row in issue_counts], call_count),
    )
