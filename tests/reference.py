"""The SPEC's summary semantics, computed independently in plain Python with exact fractions.

Deliberately shares no code with worker/rollups.py or tests/direct_aggregates.py: the tests hold the workers' SQL to this.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

from sqlalchemy import Engine, text


@dataclass(frozen=True)
class CallRow:
    account_sid: str
    start_time: dt.datetime


@dataclass(frozen=True)
class FeedbackRow:
    account_sid: str
    score: int
    issues: tuple[str, ...]
    given_at: dt.datetime


def _half_even(value: Fraction, places: int) -> Decimal:
    # Exact: scale, round the fraction half-even as an integer, scale back.
    scaled = value * 10 ** places
    floor = math.floor(scaled)
    rest = scaled - floor
    whole = floor + (1 if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2) else 0)
    return Decimal(whole).scaleb(-places)


def _sqrt_half_even(value: Fraction, places: int) -> Decimal:
    """sqrt, half-even to `places`. With 60 digits a tie can only appear when the root is exact,
    and then it is a short decimal that Decimal's correctly rounded sqrt gives exactly."""
    with localcontext() as context:
        context.prec = 60
        root = (Decimal(value.numerator) / Decimal(value.denominator)).sqrt()
        return root.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)


def expected_summary(calls: list[CallRow], feedback: list[FeedbackRow], accounts: set[str],
                     start_date: dt.date, end_date: dt.date) -> dict:
    low = dt.datetime(start_date.year, start_date.month, start_date.day, tzinfo=dt.timezone.utc)
    high = dt.datetime(end_date.year, end_date.month, end_date.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    call_count = sum(1 for c in calls if c.account_sid in accounts and low <= c.start_time < high)
    entries = [f for f in feedback if f.account_sid in accounts and low <= f.given_at < high]
    scores = sorted(f.score for f in entries)
    n = len(scores)
    if n:
        mean = Fraction(sum(scores), n)
        middle = n // 2
        median = Fraction(scores[middle]) if n % 2 else Fraction(scores[middle - 1] + scores[middle], 2)
        variance = sum((Fraction(s) - mean) ** 2 for s in scores) / n
        average, med, deviation = (float(_half_even(mean, 4)), float(_half_even(median, 4)),
                                   float(_sqrt_half_even(variance, 4)))
    else:
        average = med = deviation = None
    counts = Counter(issue for f in entries for issue in set(f.issues))
    issues = []
    for issue, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        share = _half_even(Fraction(100 * count, call_count), 2) if call_count else Decimal("0.00")
        issues.append({"description": issue, "count": count, "percentage_of_total_calls": f"{share:.2f}%"})
    return {"call_count": call_count, "call_feedback_count": n, "quality_score_average": average,
            "quality_score_median": med, "quality_score_standard_deviation": deviation, "issues": issues}


def load_rows(engine: Engine, accounts: set[str]) -> tuple[list[CallRow], list[FeedbackRow]]:
    """Read the raw rows of these accounts (fine in a test; the workers never do this)."""
    with engine.connect() as connection:
        calls = [CallRow(*row) for row in connection.execute(
            text("SELECT account_sid, start_time FROM calls WHERE account_sid = ANY(:a)"), {"a": list(accounts)})]
        feedback = [FeedbackRow(a, s, tuple(i), d) for a, s, i, d in connection.execute(
            text("SELECT account_sid, quality_score, issues, date_created FROM call_feedback WHERE account_sid = ANY(:a)"),
            {"a": list(accounts)})]
    return calls, feedback


def expected_for(engine: Engine, account_sid: str, include_subaccounts: bool, start_date: dt.date,
                 end_date: dt.date) -> dict:
    with engine.connect() as connection:
        accounts = {account_sid}
        if include_subaccounts:
            accounts |= {sid for (sid,) in connection.execute(
                text("SELECT sid FROM accounts WHERE parent_sid = :p"), {"p": account_sid})}
    calls, feedback = load_rows(engine, accounts)
    return expected_summary(calls, feedback, accounts, start_date, end_date)


AGGREGATE_FIELDS = ("call_count", "call_feedback_count", "quality_score_average", "quality_score_median",
                    "quality_score_standard_deviation", "issues")
