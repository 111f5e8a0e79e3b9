"""The summary from the per-day rollups: a few hundred rows per account-year, whatever the volume.

Every field is exact: counts and issue counts are sums; the average, median and population
standard deviation follow from the five score counts with integer arithmetic, and are rounded
half-even once, at the end. tests/direct_aggregates.py computes the same from the raw rows: it is
the reference the tests hold this to.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, localcontext

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from shared.formats import percentage, round4
from shared.models import FEEDBACK_ISSUES, Account, issue_column

SCORES = range(1, 6)


@dataclass(frozen=True)
class SummaryResult:
    call_count: int
    call_feedback_count: int
    quality_score_average: Decimal | None
    quality_score_median: Decimal | None
    quality_score_standard_deviation: Decimal | None
    issues: list[dict]

    def columns(self) -> dict:
        return self.__dict__.copy()


def scope(session: Session, account_sid: str, include_subaccounts: bool) -> list[str]:
    if not include_subaccounts:
        return [account_sid]
    children = session.scalars(select(Account.sid).where(Account.parent_sid == account_sid))
    return [account_sid, *children]


def issue_list(issue_counts: list[tuple[str, int]], call_count: int) -> list[dict]:
    """Ordered by count descending, then description."""
    ordered = sorted(issue_counts, key=lambda pair: (-pair[1], pair[0]))
    return [{"description": issue, "count": count, "percentage_of_total_calls": percentage(count, call_count)}
            for issue, count in ordered]


def _median(counts: list[int]) -> Decimal:
    """The middle score (the mean of the two middle ones for an even count) from counts per score."""
    n = sum(counts)
    wanted = sorted({(n - 1) // 2, n // 2})  # 0-based positions of the middle value(s)
    values, seen = [], 0
    for score, count in zip(SCORES, counts):
        while wanted and wanted[0] < seen + count:
            values.append(score)
            wanted.pop(0)
        seen += count
    return Decimal(sum(values)) / len(values)


def score_statistics(counts: list[int]) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """(average, median, population standard deviation), each rounded half-even to 4 places."""
    n = sum(counts)
    if n == 0:
        return None, None, None
    total = sum(score * count for score, count in zip(SCORES, counts))
    squares = sum(score * score * count for score, count in zip(SCORES, counts))
    with localcontext() as context:
        # Enough digits that rounding to 4 places is decided exactly: a rational with this
        # denominator is either a tie (and exact here) or far from one.
        context.prec = 60
        average = Decimal(total) / n
        deviation = Decimal(n * squares - total * total).sqrt() / n  # sqrt(E[x^2] - E[x]^2), exact inputs
        return round4(average), round4(_median(counts)), round4(deviation)


FEEDBACK_COLUMNS = [f"score_{score}" for score in SCORES] + [issue_column(issue) for issue in FEEDBACK_ISSUES]
_WINDOW = "account_sid IN :accounts AND day BETWEEN :start AND :end"
# Pending feedback deltas as daily columns: each counts its new values in and its old values out.
FEEDBACK_DELTA_SUMS = [f"count(*) FILTER (WHERE quality_score = {n}) - count(*) FILTER (WHERE old_quality_score = {n})"
                       for n in SCORES] + \
                      [f"count(*) FILTER (WHERE '{issue}' = ANY(issues)) - count(*) FILTER (WHERE '{issue}' = ANY(old_issues))"
                       for issue in FEEDBACK_ISSUES]
# The folded daily rows plus the deltas not folded yet (migration 0007), calls and feedback in one
# statement: one snapshot, in which a fold has moved a delta either entirely or not at all, and in
# which no feedback is counted whose call is not (two statements saw 176 feedback of 175 calls).
# The delta tables have no index (every writer appends to them): a scan of the few seconds' worth
# a fold leaves pending.
SUMMARY_SQL = text(f"""SELECT (SELECT coalesce(sum(calls), 0) FROM (
        SELECT calls FROM daily_calls WHERE {_WINDOW}
        UNION ALL SELECT sum(calls) FROM calls_rollup_deltas WHERE {_WINDOW}) c),
    {", ".join(f"coalesce(sum({c}), 0)" for c in FEEDBACK_COLUMNS)} FROM (
    SELECT {", ".join(FEEDBACK_COLUMNS)} FROM daily_feedback WHERE {_WINDOW}
    UNION ALL SELECT {", ".join(FEEDBACK_DELTA_SUMS)} FROM feedback_rollup_deltas WHERE {_WINDOW}) r""").bindparams(
    bindparam("accounts", expanding=True))


def compute(session: Session, account_sid: str, include_subaccounts: bool,
            start_date: dt.date, end_date: dt.date) -> SummaryResult:
    window = {"accounts": scope(session, account_sid, include_subaccounts), "start": start_date, "end": end_date}
    row = session.execute(SUMMARY_SQL, window).one()
    call_count, counts, issue_counts = int(row[0]), [int(v) for v in row[1:6]], [int(v) for v in row[6:]]
    average, median, deviation = score_statistics(counts)
    reported = [(issue, count) for issue, count in zip(FEEDBACK_ISSUES, issue_counts) if count]
    return SummaryResult(
        call_count=call_count,
        call_feedback_count=sum(counts),
        quality_score_average=average,
        quality_score_median=median,
        quality_score_standard_deviation=deviation,
        issues=issue_list(reported, call_count),
    )
