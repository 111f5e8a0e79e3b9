"""Many writers to one account at once (issue 13): feedback posted and replaced, calls streamed in
by the status callback, feedback imported over existing entries, feedback and calls deleted, calls
moved to another account (0006 drops their feedback), while two folders fold the deltas in small
batches. Summaries read mid-way (in one snapshot) and at the end equal the direct aggregates and
the independent reference, to the last digit; after a last fold nothing is pending."""

from __future__ import annotations

import datetime as dt
import io
import random
import threading
import time

from sqlalchemy import delete, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.feedback import upsert_feedback
from api.voice_status import RECORD_CALL
from cli.imports import ImportFailed, import_feedback
from shared.accounts.sids import CALL, new_sid
from shared.models import FEEDBACK_ISSUES, Call
from tests.reference import AGGREGATE_FIELDS, expected_for
from tests.support import make_account, make_calls
from tests.test_semantics import sql_summary

UTC = dt.timezone.utc
WRITERS, OPERATIONS_PER_WRITER, FOLDERS = 8, 120, 2
DEADLINE_S = 60
# What concurrent writers of the same calls legitimately run into; anything else fails the test.
EXPECTED_FAILURES = ("foreign key", "does not exist", "deadlock detected")


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _operation(session: Session, rng: random.Random, sids: list[str], accounts: dict) -> None:
    sid = rng.choice(sids)
    kind = rng.random()
    if kind < 0.55:  # the Feedback endpoint's upsert: a new entry or a replacement
        call = session.get(Call, sid)
        if call is not None:
            upsert_feedback(session, call, rng.randint(1, 5), rng.sample(FEEDBACK_ISSUES, rng.randint(0, 2)))
    elif kind < 0.70:  # the voice status ingest: a new call, or Twilio's word on a known one
        fresh = new_sid(CALL) if rng.random() < 0.7 else sid
        session.execute(RECORD_CALL, {"sid": fresh, "account": accounts["parent"].sid,
                                      "start": _now() - dt.timedelta(hours=rng.randint(0, 47))})
        if fresh != sid:
            sids.append(fresh)
    elif kind < 0.78:  # the feedback import, over entries that may exist, given on earlier days
        picked = {rng.choice(sids) for _ in range(3)}
        csv = "call_sid,quality_score,issues,date_created\n" + "".join(
            f"{s},{rng.randint(1, 5)},{';'.join(rng.sample(FEEDBACK_ISSUES, rng.randint(0, 3)))},"
            f"{(_now() - dt.timedelta(days=rng.randint(0, 2))).isoformat()}\n" for s in picked)
        import_feedback(session.connection(), io.StringIO(csv))
    elif kind < 0.86:  # an operator's SQL: feedback withdrawn
        session.execute(text("DELETE FROM call_feedback WHERE call_sid = :s"), {"s": sid})
    elif kind < 0.93:  # a call deleted, its feedback cascaded
        session.execute(delete(Call).where(Call.sid == sid))
    else:  # a call moved to the subaccount: its feedback dropped by 0006's trigger
        session.execute(text("UPDATE calls SET account_sid = :a WHERE sid = :s"),
                        {"a": accounts["child"].sid, "s": sid})
    session.commit()


def _writer(engine, seed: int, sids: list[str], accounts: dict, errors: list) -> None:
    rng = random.Random(seed)
    with Session(engine) as session:
        for _ in range(OPERATIONS_PER_WRITER):
            try:
                _operation(session, rng, sids, accounts)
            except (DBAPIError, ImportFailed) as error:  # the call deleted under us, or a deadlock
                session.rollback()
                if not any(reason in str(error) for reason in EXPECTED_FAILURES):
                    errors.append(error)
            except Exception as error:  # noqa: BLE001 (reported by the test, not lost in the thread)
                session.rollback()
                errors.append(error)


def _summaries(session: Session, account_sid: str, days: list[tuple[dt.date, dt.date]]) -> list:
    return [sql_summary(session, account_sid, include, start, end, method)
            for include in (False, True) for start, end in days for method in ("rollups", "direct")]


def test_many_writers_to_one_account_leave_every_summary_exact(engine):
    from worker import folding  # the task module builds the Celery app: once the fixtures set REDIS_URL

    parent = make_account(engine)
    accounts = {"parent": parent, "child": make_account(engine, parent)}
    sids = make_calls(engine, parent, [_now() - dt.timedelta(minutes=17 * i) for i in range(300)])
    today = _now().date()
    days = [(today, today), (today - dt.timedelta(days=2), today), (today - dt.timedelta(days=1),
                                                                     today - dt.timedelta(days=1))]
    errors: list = []
    writers = [threading.Thread(target=_writer, args=(engine, seed, sids, accounts, errors)) for seed in range(WRITERS)]
    done = threading.Event()
    folded, mid_way = [0], []

    def fold_until_done():
        while not done.is_set():
            folded[0] += folding.fold(limit=7, max_batches=3)

    folders = [threading.Thread(target=fold_until_done) for _ in range(FOLDERS)]
    deadline = time.monotonic() + DEADLINE_S
    for thread in writers + folders:
        thread.start()
    snapshot = engine.execution_options(isolation_level="REPEATABLE READ")
    while any(t.is_alive() for t in writers) and time.monotonic() < deadline:
        with Session(snapshot) as session:  # rollups and raw rows read in one snapshot, mid-way
            got = _summaries(session, parent.sid, days[:1])
            mid_way.append(got[0::2] == got[1::2])
    for thread in writers:
        thread.join(max(0.0, deadline - time.monotonic()))
    done.set()
    for thread in folders:
        thread.join(10)

    assert not errors
    assert not any(t.is_alive() for t in writers + folders), "the load did not finish in time"
    assert folded[0] > 0 and mid_way and all(mid_way)
    for final_fold in (False, True):  # with deltas still pending, then with everything folded
        if final_fold:
            folding.fold(max_batches=1000)
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT (SELECT count(*) FROM calls_rollup_deltas) + "
                                              "(SELECT count(*) FROM feedback_rollup_deltas)")) == 0
        with Session(engine) as session:
            got = _summaries(session, parent.sid, days)
        assert got[0::2] == got[1::2]  # rollups == direct aggregates, every window and scope
        expected = [{k: v for k, v in expected_for(engine, parent.sid, include, start, end).items()
                     if k in AGGREGATE_FIELDS} for include in (False, True) for start, end in days]
        assert got[0::2] == expected
