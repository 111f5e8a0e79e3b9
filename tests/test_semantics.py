"""Every summary field, computed both ways the code can (the rollups the workers use, and the
direct aggregates over raw rows that stay as the reference), equals the independent computation in
tests/reference.py on randomised data: subaccounts in and out of scope, window edges (the last
microsecond of EndDate, the midnight after it, the microsecond before StartDate), empty windows,
even counts for the median, and half-even rounding."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from shared.accounts.sids import CALL, new_sid
from shared.models import FEEDBACK_ISSUES, Call, CallFeedback, FeedbackSummary
from shared.summaries.representation import summary_resource
from tests import direct_aggregates as aggregates
from tests.reference import AGGREGATE_FIELDS, CallRow, FeedbackRow, expected_summary
from tests.support import make_account
from worker import rollups

UTC = dt.timezone.utc
BASE = dt.date(2024, 2, 27)  # the window crosses a leap day
DAY = dt.timedelta(days=1)
US = dt.timedelta(microseconds=1)


@st.composite
def moments(draw, start: dt.date, end: dt.date) -> dt.datetime:
    """Mostly the window's edges and their neighbours, sometimes anywhere within two days of it."""
    low = dt.datetime.combine(start, dt.time(), UTC)
    high = dt.datetime.combine(end, dt.time(), UTC) + DAY
    edges = [low - US, low, low + US, high - US, high, high + US, high - DAY, low + DAY - US]
    anywhere = st.integers(0, int((high - low + 4 * DAY) / US)).map(lambda n: low - 2 * DAY + n * US)
    return draw(st.one_of(st.sampled_from(edges), anywhere))


@st.composite
def datasets(draw):
    start = BASE + dt.timedelta(days=draw(st.integers(0, 3)))
    end = start + dt.timedelta(days=draw(st.integers(0, 3)))
    owners = st.sampled_from(["parent", "child", "sibling", "stranger"])
    calls = draw(st.lists(st.tuples(owners, moments(start, end)), max_size=40))
    feedback = []
    for index in draw(st.lists(st.integers(0, max(len(calls) - 1, 0)), unique=True, max_size=len(calls))):
        score = draw(st.integers(1, 5))
        issues = draw(st.lists(st.sampled_from(FEEDBACK_ISSUES), unique=True, max_size=4))
        feedback.append((index, score, tuple(issues), draw(moments(start, end))))
    include = draw(st.booleans())
    return start, end, include, calls, feedback


@pytest.fixture
def accounts(engine):
    parent = make_account(engine, name="parent")
    return {"parent": parent, "child": make_account(engine, parent, name="child"),
            "sibling": make_account(engine, parent, name="sibling"), "stranger": make_account(engine, name="stranger")}


METHODS = {"rollups": rollups.compute, "direct": aggregates.compute}


def sql_summary(session: Session, account_sid: str, include: bool, start: dt.date, end: dt.date,
                method: str = "rollups") -> dict:
    result = METHODS[method](session, account_sid, include, start, end)
    summary = FeedbackSummary(sid="FS" + "0" * 32, account_sid=account_sid, status="completed", start_date=start,
                              end_date=end, include_subaccounts=include, date_created=dt.datetime.now(UTC),
                              date_updated=dt.datetime.now(UTC), **result.columns())
    return {name: summary_resource(summary)[name] for name in AGGREGATE_FIELDS}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=datasets())
def test_both_computations_equal_the_independent_one(engine, accounts, data):
    start, end, include, calls, feedback = data
    call_rows, feedback_rows, call_sids = [], [], []
    with Session(engine) as session:  # rolled back at the end: every example starts empty
        for owner, start_time in calls:
            sid = new_sid(CALL)
            call_sids.append((sid, accounts[owner].sid))
            session.add(Call(sid=sid, account_sid=accounts[owner].sid, start_time=start_time))
            call_rows.append(CallRow(accounts[owner].sid, start_time))
        session.flush()
        for index, score, issues, given_at in feedback:
            sid, account_sid = call_sids[index]
            session.add(CallFeedback(call_sid=sid, account_sid=account_sid, quality_score=score, issues=list(issues),
                                     date_created=given_at, date_updated=given_at))
            feedback_rows.append(FeedbackRow(account_sid, score, issues, given_at))
        session.flush()
        parent = accounts["parent"].sid
        scope = {parent, accounts["child"].sid, accounts["sibling"].sid} if include else {parent}
        for account_sid, in_scope in ((parent, scope), (accounts["child"].sid, {accounts["child"].sid})):
            expected = expected_summary(call_rows, feedback_rows, in_scope, start, end)
            for method in METHODS:
                assert sql_summary(session, account_sid, include and account_sid == parent, start, end,
                                   method) == expected, method
        session.rollback()


def _load(engine, account, calls_at: list[dt.datetime], feedback: list[tuple[int, list[str], dt.datetime]]):
    with Session(engine) as session:
        sids = [new_sid(CALL) for _ in calls_at]
        session.add_all(Call(sid=sid, account_sid=account.sid, start_time=t) for sid, t in zip(sids, calls_at))
        session.flush()
        session.add_all(CallFeedback(call_sid=sid, account_sid=account.sid, quality_score=score, issues=issues,
                                     date_created=t, date_updated=t) for sid, (score, issues, t) in zip(sids, feedback))
        session.commit()


def _summary(engine, account, start=BASE, end=BASE) -> dict:
    with Session(engine) as session:
        both = [sql_summary(session, account.sid, False, start, end, method) for method in METHODS]
    assert both[0] == both[1]
    return both[0]


def test_an_empty_window_has_zero_counts_null_scores_and_no_issues(engine, accounts):
    assert _summary(engine, accounts["parent"]) == {
        "call_count": 0, "call_feedback_count": 0, "quality_score_average": None, "quality_score_median": None,
        "quality_score_standard_deviation": None, "issues": []}


def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(engine, accounts):
    noon = dt.datetime.combine(BASE, dt.time(12), UTC)
    _load(engine, accounts["parent"], [noon] * 4, [(1, [], noon), (2, [], noon), (5, [], noon), (5, [], noon)])
    got = _summary(engine, accounts["parent"])
    assert (got["quality_score_median"], got["quality_score_average"]) == (3.5, 3.25)
    assert got["quality_score_standard_deviation"] == 1.7854  # sqrt(3.1875) = 1.78535...


def test_percentages_are_half_even_over_all_calls_in_the_window(engine, accounts):
    noon = dt.datetime.combine(BASE, dt.time(12), UTC)
    # 1 of 8 calls: 12.5% exactly; 3 of 8: 37.5%; both ties at 2 places are already exact.
    # 1 of 800 would be 0.125 -> "0.12%" (half-even), checked in test_units.
    _load(engine, accounts["parent"], [noon] * 8,
          [(1, ["dropped-call", "one-way-audio"], noon), (2, ["one-way-audio"], noon), (3, ["one-way-audio"], noon)])
    assert _summary(engine, accounts["parent"])["issues"] == [
        {"description": "one-way-audio", "count": 3, "percentage_of_total_calls": "37.50%"},
        {"description": "dropped-call", "count": 1, "percentage_of_total_calls": "12.50%"},
    ]


def test_issues_of_feedback_whose_calls_are_outside_the_window_count_with_zero_calls(engine, accounts):
    """Feedback counts by the day it was given, calls by the day they started: they can disagree."""
    before = dt.datetime.combine(BASE, dt.time(), UTC) - US
    inside = dt.datetime.combine(BASE, dt.time(), UTC)
    _load(engine, accounts["parent"], [before], [(2, ["post-dial-delay"], inside)])
    got = _summary(engine, accounts["parent"])
    assert (got["call_count"], got["call_feedback_count"]) == (0, 1)
    assert got["issues"] == [{"description": "post-dial-delay", "count": 1, "percentage_of_total_calls": "0.00%"}]
