"""Many writers to one account at once (issue 13): feedback posted and replaced, call annotations
updated (scored, cleared, unscored: issue 24), calls streamed in by the status callback, feedback
imported over existing entries, feedback and calls deleted, calls moved to another account (0006
drops their feedback, 0011 their annotation), while two folders fold the deltas in small batches.
Summaries read mid-way (in one snapshot) and at the end equal the direct aggregates and the
independent reference, to the last digit; after a last fold nothing is pending. And Feedback posts
racing annotation updates of the same few calls leave each call's entry as the last to commit
wrote it."""

from __future__ import annotations

import datetime as dt
import io
import random
import threading
import time

from sqlalchemy import delete, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from api.feedback import UPSERT_OWN_CALL_FEEDBACK, upsert_feedback
from api.voice_status import RECORD_CALL
from cli.imports import ImportFailed, import_feedback
from shared.accounts.sids import CALL, new_sid
from shared.calls.annotations import Annotation, annotate, clears_score
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


def _annotation_update(rng: random.Random) -> dict:
    """What an annotation update may carry (as api/annotations.py parses it): a score, often; a clear
    of it, sometimes; issues that map to feedback issues, and values that map to none."""
    update = {"call_score": rng.choice((1, 2, 3, 4, 5, 2, None))} if rng.random() < 0.8 else {}
    if rng.random() < 0.5:
        update["quality_issues"] = tuple(rng.sample(("latency", "dtmf", "owa", "echo", "low_volume"), rng.randint(1, 2)))
    if rng.random() < 0.3:
        update["connectivity_issue"] = rng.choice(("dropped_call", "caller_id", "invalid_number", None))
    if rng.random() < 0.3:
        update["spam"] = rng.choice((True, False, None))
    if rng.random() < 0.2:
        update["comment"] = "concurrent"
    return update


def _operation(session: Session, rng: random.Random, sids: list[str], accounts: dict) -> None:
    sid = rng.choice(sids)
    kind = rng.random()
    if kind < 0.40:  # the Feedback endpoint's upsert: a new entry or a replacement
        call = session.get(Call, sid)
        if call is not None:
            upsert_feedback(session, call, rng.randint(1, 5), rng.sample(FEEDBACK_ISSUES, rng.randint(0, 2)))
    elif kind < 0.55:  # an annotation update by the parent's credentials (a deleted call comes back provisional)
        annotate(session.connection(), accounts["parent"].sid, sid, _annotation_update(rng))
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


RACED_CALLS, RACERS, RACES_PER_RACER = 4, 8, 60


def _race(engine, seed: int, account_sid: str, sids: list[str], done: list, errors: list) -> None:
    """Feedback posts (the endpoint's own statement, which holds the call FOR SHARE) and annotation
    updates of a few calls, each noting where it committed: a sequence value taken just before its
    commit, while it still holds what orders it against the others of its call."""
    rng = random.Random(seed)
    for _ in range(RACES_PER_RACER):
        sid = rng.choice(sids)
        try:
            with engine.begin() as connection:
                if rng.random() < 0.4:
                    score, issues = rng.randint(1, 5), rng.sample(FEEDBACK_ISSUES, rng.randint(0, 2))
                    assert connection.execute(UPSERT_OWN_CALL_FEEDBACK, {
                        "call_sid": sid, "account_sid": account_sid, "quality_score": score, "issues": issues}).first()
                    write = ("post", score, frozenset(issues))
                else:
                    update = _annotation_update(rng)
                    assert annotate(connection, account_sid, sid, update) is not None
                    write = ("annotation", update)
                order = connection.execute(text("SELECT nextval('raced_writes')")).scalar()
            done.append((order, sid, write))
        except Exception as error:  # noqa: BLE001 (reported by the test, not lost in the thread)
            errors.append(error)


def test_feedback_posts_racing_annotation_updates_leave_the_last_committed_write(engine):
    """SPEC, Call Annotations: a call has one entry; a post and an update after which the annotation
    has a score both write it, the later write sets its score and issues, and an update that clears
    the score removes it, whatever the order and concurrency. Replayed in commit order, the writes
    must give every call's entry and annotation exactly as they are."""
    account = make_account(engine)
    sids = make_calls(engine, account, [_now()] * RACED_CALLS)
    with engine.begin() as connection:
        connection.execute(text("DROP SEQUENCE IF EXISTS raced_writes; CREATE SEQUENCE raced_writes"))
    done, errors = [], []
    racers = [threading.Thread(target=_race, args=(engine, seed, account.sid, sids, done, errors))
              for seed in range(RACERS)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(DEADLINE_S)
    assert not errors and len(done) == RACERS * RACES_PER_RACER

    entries = {sid: None for sid in sids}
    notes = {sid: Annotation() for sid in sids}
    for _, sid, write in sorted(done, key=lambda item: item[0]):
        if write[0] == "post":
            entries[sid] = write[1:]
            continue
        notes[sid] = Annotation(**{**notes[sid].__dict__, **write[1]})
        if notes[sid].call_score is not None:
            entries[sid] = (notes[sid].call_score, frozenset(notes[sid].feedback_issues()))
        elif clears_score(write[1]):
            entries[sid] = None
    with engine.connect() as connection:
        stored = {sid: None for sid in sids} | {sid: (score, frozenset(issues)) for sid, score, issues in connection.execute(
            text("SELECT call_sid, quality_score, issues FROM call_feedback WHERE call_sid = ANY(:s)"), {"s": sids})}
        annotated = {row[0]: Annotation.from_row(row[1:]) for row in connection.execute(text(
            "SELECT call_sid, answered_by, connectivity_issue, quality_issues, spam, call_score, comment, incident "
            "FROM call_annotations WHERE call_sid = ANY(:s)"), {"s": sids})}
        connection.execute(text("DROP SEQUENCE raced_writes"))
        connection.commit()
    assert stored == entries
    assert annotated == {sid: note for sid, note in notes.items() if sid in annotated} and set(annotated) == set(sids)
    today = _now().date()
    expected = {k: v for k, v in expected_for(engine, account.sid, False, today, today).items() if k in AGGREGATE_FIELDS}
    with Session(engine) as session:
        assert sql_summary(session, account.sid, False, today, today) == expected
