"""The rollups stay exact through every write path: imports in several batches, feedback posted and
replaced through the endpoint's upsert, feedback re-imported over existing entries, call
annotations updated (scored, unscored, cleared: the entry kept, rewritten or removed), and calls
deleted (their feedback going with them). After each random sequence, the rollup-based summary
equals the direct aggregates and the independent computation, to the last digit."""

from __future__ import annotations

import datetime as dt
import io
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from api.feedback import upsert_feedback
from cli.imports import import_calls, import_feedback
from shared.accounts.sids import CALL, new_sid
from shared.calls.annotations import annotate
from shared.models import FEEDBACK_ISSUES, Call
from tests import direct_aggregates as aggregates
from tests.reference import AGGREGATE_FIELDS, expected_for
from tests.support import make_account
from tests.test_semantics import sql_summary
from worker import rollups

UTC = dt.timezone.utc
START, END = dt.date(2024, 3, 30), dt.date(2024, 4, 1)  # crosses a month end
times = st.integers(0, 5 * 24 * 3600 - 1).map(
    lambda s: dt.datetime(2024, 3, 29, tzinfo=UTC) + dt.timedelta(seconds=s, microseconds=s % 7))
scores = st.integers(1, 5)
issue_sets = st.lists(st.sampled_from(FEEDBACK_ISSUES), unique=True, max_size=3)
operations = st.lists(st.one_of(
    st.tuples(st.just("import calls"), st.lists(st.tuples(st.sampled_from(["parent", "child"]), times),
                                                min_size=1, max_size=15)),
    st.tuples(st.just("post feedback"), st.integers(0, 10_000), scores, issue_sets),
    st.tuples(st.just("import feedback"), st.lists(st.tuples(st.integers(0, 10_000), scores, issue_sets, times),
                                                   min_size=1, max_size=8)),
    st.tuples(st.just("delete call"), st.integers(0, 10_000)),
    st.tuples(st.just("annotate"), st.integers(0, 10_000), st.fixed_dictionaries({}, optional={
        "call_score": st.none() | scores, "spam": st.none() | st.booleans(),
        "quality_issues": st.none() | st.lists(st.sampled_from(("latency", "dtmf", "echo", "owa")), min_size=1,
                                               unique=True).map(tuple)})),
), min_size=1, max_size=12)


@pytest.fixture
def accounts(engine):
    parent = make_account(engine)
    return {"parent": parent, "child": make_account(engine, parent)}


def _calls(session: Session) -> list[str]:
    return list(session.scalars(select(Call.sid).order_by(Call.sid)))


def _apply(session: Session, accounts: dict, operation: tuple) -> None:
    kind, *args = operation
    existing = _calls(session)
    if kind == "import calls":
        csv = "sid,account_sid,start_time\n" + "".join(f"{new_sid(CALL)},{accounts[o].sid},{t.isoformat()}\n"
                                                       for o, t in args[0])
        import_calls(session.connection(), io.StringIO(csv))
    elif not existing:
        return
    elif kind == "post feedback":
        pick, score, issues = args
        upsert_feedback(session, session.get(Call, existing[pick % len(existing)]), score, issues)
    elif kind == "annotate":  # by the parent's credentials, on its own calls and its subaccount's
        pick, update = args
        annotate(session.connection(), accounts["parent"].sid, existing[pick % len(existing)], update)
    elif kind == "import feedback":
        rows = {existing[pick % len(existing)]: (score, issues, t) for pick, score, issues, t in args[0]}
        csv = "call_sid,quality_score,issues,date_created\n" + "".join(
            f"{sid},{score},{';'.join(issues)},{t.isoformat()}\n" for sid, (score, issues, t) in rows.items())
        import_feedback(session.connection(), io.StringIO(csv))
    else:
        session.execute(delete(Call).where(Call.sid == existing[args[0] % len(existing)]))
    session.flush()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, include=st.booleans())
def test_rollups_stay_exact_through_every_write_path(engine, accounts, ops, include):
    with Session(engine) as session:
        for operation in ops:
            _apply(session, accounts, operation)
        session.commit()
    try:
        with Session(engine) as session:
            got = sql_summary(session, accounts["parent"].sid, include, START, END, "rollups")
            assert got == sql_summary(session, accounts["parent"].sid, include, START, END, "direct")
        assert got == {k: v for k, v in expected_for(engine, accounts["parent"].sid, include, START, END).items()
                       if k in AGGREGATE_FIELDS}
    finally:
        with engine.begin() as connection:
            connection.execute(text("TRUNCATE daily_calls, daily_feedback, calls_rollup_deltas, feedback_rollup_deltas, "
                                    "call_annotations, call_feedback, calls"))


def test_replacing_feedback_moves_its_old_values_out_of_the_rollup(engine, accounts):
    from worker import folding  # the task module builds the Celery app: once the fixtures set REDIS_URL

    parent = accounts["parent"]
    with Session(engine) as session:
        call = Call(sid=new_sid(CALL), account_sid=parent.sid, start_time=dt.datetime(2024, 3, 30, 12, tzinfo=UTC))
        session.add(call)
        session.flush()
        upsert_feedback(session, call, 1, ["dropped-call", "one-way-audio"])
        session.commit()
        upsert_feedback(session, call, 5, [])
        session.commit()
        pending = session.execute(text("SELECT quality_score, issues, old_quality_score, old_issues "
                                       "FROM feedback_rollup_deltas")).all()
    # Appended, not folded yet (migration 0007): the first entry, then the replacement, old values with it.
    assert sorted(pending) == [(1, ["dropped-call", "one-way-audio"], None, None),
                               (5, [], 1, ["dropped-call", "one-way-audio"])]
    assert folding.fold() == 2 + 1  # and the call's own delta
    with Session(engine) as session:
        row = session.execute(text("SELECT score_1, score_5, issue_dropped_call, issue_one_way_audio "
                                   "FROM daily_feedback")).all()
    # Feedback given now: its rollup row is today's; one entry, moved from score 1 to score 5.
    assert row == [(0, 1, 0, 0)]
    with Session(engine) as session:
        today = dt.date.today()
        assert rollups.compute(session, parent.sid, False, today, today) == \
            aggregates.compute(session, parent.sid, False, today, today)


def test_a_fold_behind_a_lock_gives_up_until_the_next_run_and_loses_nothing(engine, accounts, monkeypatch):
    from worker import folding

    monkeypatch.setattr(folding, "LOCK_TIMEOUT", "300ms")
    parent = accounts["parent"]
    with Session(engine) as session:
        session.add(Call(sid=new_sid(CALL), account_sid=parent.sid, start_time=dt.datetime(2024, 3, 30, tzinfo=UTC)))
        session.commit()
    with engine.connect() as locker:
        locker.execute(text("LOCK TABLE daily_calls IN ACCESS EXCLUSIVE MODE"))  # an operator's, say
        began = time.monotonic()
        assert folding.fold() == 0
        assert time.monotonic() - began < 3
        locker.rollback()
    assert folding.fold() == 1
    with engine.connect() as connection:
        assert connection.execute(text("SELECT calls FROM daily_calls")).scalar() == 1
        assert connection.execute(text("SELECT count(*) FROM calls_rollup_deltas")).scalar() == 0
