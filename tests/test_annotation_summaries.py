"""A summary over calls annotated, given feedback, both in either order, unscored and cleared, equals
an independent computation of the SPEC's rules (SPEC, Call Annotations): a model of each call's one
feedback entry, kept here by replaying the same requests with its own reading of the mapping table,
fed to tests/reference.py. Some entries were given days before (imported), so that "date_created is
when the call was first given a score" shows in which day a summary counts them on."""

from __future__ import annotations

import datetime as dt
import io
import random
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.orm import Session

from cli.imports import import_feedback
from shared.accounts.sids import CALL, new_sid
from shared.models import FEEDBACK_ISSUES
from tests.reference import AGGREGATE_FIELDS, CallRow, FeedbackRow, expected_summary
from tests.support import feedback_path, make_account, make_calls
from tests.test_api_annotations import annotate
from tests.test_semantics import sql_summary

UTC = dt.timezone.utc
SEED = 24
CALLS = 70
PARAMETERS = {  # what the requests draw from: every value of Twilio's reference, and the empty clear
    "CallScore": ["1", "2", "3", "4", "5", ""],
    "QualityIssues": ["latency", "dtmf", "owa", "echo", "low_volume,choppy_robotic", "static_noise,latency,owa",
                      "no_quality_issue", "dtmf,echo,static_noise", ""],
    "ConnectivityIssue": ["no_connectivity_issue", "invalid_number", "caller_id", "dropped_call",
                          "number_reachability", ""],
    "Spam": ["true", "false", "True", ""],
    "AnsweredBy": ["human", "machine", ""],
    "Comment": ["a comment", ""],
}


def spec_issues(annotation: dict) -> set[str]:
    """SPEC, Call Annotations' table, read afresh: the feedback issues an annotation reports."""
    reported = set()
    for value in (annotation.get("QualityIssues") or "").split(","):
        if value == "latency":
            reported.add("audio-latency")
        elif value == "dtmf":
            reported.add("digits-not-captured")
        elif value == "owa":
            reported.add("one-way-audio")
        elif value in ("choppy_robotic", "echo", "static_noise", "low_volume"):
            reported.add("imperfect-audio")
    reported |= {"dropped_call": {"dropped-call"}, "caller_id": {"incorrect-caller-id"}}.get(
        annotation.get("ConnectivityIssue"), set())
    if (annotation.get("Spam") or "").lower() == "true":
        reported.add("unsolicited-call")
    return reported


@dataclass
class Model:
    """One call as the SPEC says it stands: its annotation (parameter -> last non-empty value) and its
    feedback entry (score, issues, the UTC day it was first given a score), or None."""

    annotation: dict = field(default_factory=dict)
    entry: tuple[int, frozenset, dt.date] | None = None
    history: list[str] = field(default_factory=list)  # "post", "scored", "unscored", "cleared"

    def post(self, score: int, issues: list[str], today: dt.date) -> None:
        self.history.append("post")
        self._write(score, issues, today)

    def _write(self, score: int, issues: list[str], today: dt.date) -> None:
        self.entry = (score, frozenset(issues), self.entry[2] if self.entry else today)

    def annotate(self, form: dict, today: dt.date) -> None:
        for name, value in form.items():
            if value:
                self.annotation[name] = value
            else:
                self.annotation.pop(name, None)
        if "CallScore" in self.annotation:
            self.history.append("scored")
            self._write(int(self.annotation["CallScore"]), sorted(spec_issues(self.annotation)), today)
        elif "CallScore" in form:
            self.history.append("cleared")
            self.entry = None  # cleared: the entry goes, whoever wrote it
        else:
            self.history.append("unscored")


def _random_annotation(rng: random.Random) -> dict:
    names = rng.sample(sorted(PARAMETERS), rng.randint(1, 4))
    return {name: rng.choice(PARAMETERS[name]) for name in names}


def test_a_summary_over_annotations_and_feedback_in_any_order_equals_the_spec(client, engine, redis_client):
    rng = random.Random(SEED)
    parent = make_account(engine)
    child = make_account(engine, parent)
    now = dt.datetime.now(UTC)
    today = now.date()
    owners = [rng.choice((parent, child)) for _ in range(CALLS)]
    starts = [now - dt.timedelta(days=rng.randint(0, 5), minutes=rng.randint(0, 600)) for _ in range(CALLS)]
    sids = [make_calls(engine, owner, [start])[0] for owner, start in zip(owners, starts)]
    models = {sid: Model() for sid in sids}
    # Feedback given on earlier days to a third of the calls (an import keeps its date).
    earlier = {sid: today - dt.timedelta(days=rng.randint(1, 4)) for sid in sids if rng.random() < 0.33}
    with engine.begin() as connection:
        rows = []
        for sid, day in earlier.items():
            score, issues = rng.randint(1, 5), rng.sample(FEEDBACK_ISSUES, rng.randint(0, 2))
            rows.append(f"{sid},{score},{';'.join(issues)},{day.isoformat()}T09:00:00Z\n")
            models[sid].entry = (score, frozenset(issues), day)
        import_feedback(connection, io.StringIO("call_sid,quality_score,issues,date_created\n" + "".join(rows)))
    # Calls nobody knew: recorded from their first annotation, as the credentials' account's.
    unknown = [new_sid(CALL) for _ in range(6)]
    owners += [parent] * len(unknown)
    models.update({sid: Model() for sid in unknown})
    for sid, owner in zip(sids + unknown, owners):
        for _ in range(rng.choice((0, 1, 1, 2, 3, 4)) if sid in sids else 1 + rng.randint(0, 2)):
            as_ = parent if rng.random() < 0.3 else owner  # a parent acts on its subaccount's calls too
            if sid in sids and rng.random() < 0.35:
                score, issues = rng.randint(1, 5), rng.sample(FEEDBACK_ISSUES, rng.randint(0, 3))
                response = client.post(feedback_path(owner.sid, sid), form={"QualityScore": score, "Issue": issues},
                                       auth=(as_.sid, as_.auth_token))
                models[sid].post(score, issues, today)
            else:
                form = _random_annotation(rng)
                response = annotate(client, owner, sid, form, as_=as_)
                models[sid].annotate(form, today)
            assert response.status == 200, response.body

    with engine.connect() as connection:
        recorded = dict(connection.execute(text("SELECT sid, start_time FROM calls WHERE sid = ANY(:s)"),
                                           {"s": unknown}).all())
        stored = {sid: (score, frozenset(issues), created.astimezone(UTC).date()) for sid, score, issues, created in
                  connection.execute(text("SELECT call_sid, quality_score, issues, date_created FROM call_feedback"))}
    expected_entries = {sid: model.entry for sid, model in models.items() if model.entry is not None}
    assert stored == expected_entries  # every entry, its score, issues and day, as the SPEC's rules say
    kinds = _kinds(models)
    assert all(kinds.values()), kinds  # the seed covers every case the issue names

    calls = [CallRow(owner.sid, recorded.get(sid) or start) for sid, owner, start in
             zip(sids + unknown, owners, starts + [None] * len(unknown))]
    feedback = [FeedbackRow(owner.sid, entry[0], tuple(entry[1]), dt.datetime.combine(entry[2], dt.time(12), UTC))
                for sid, owner in zip(sids + unknown, owners) if (entry := models[sid].entry) is not None]
    for start, end in ((today, today), (today - dt.timedelta(days=5), today), (today - dt.timedelta(days=4),
                                                                               today - dt.timedelta(days=1))):
        for include in (False, True):
            scope = {parent.sid, child.sid} if include else {parent.sid}
            reference = expected_summary(calls, feedback, scope, start, end)
            with Session(engine) as session:
                for method in ("rollups", "direct"):
                    got = sql_summary(session, parent.sid, include, start, end, method)
                    assert got == {name: reference[name] for name in AGGREGATE_FIELDS}, (start, end, include, method)


def _kinds(models: dict[str, Model]) -> dict[str, int]:
    """How many calls went through each of the issue's cases."""
    def followed(history: list[str], first: str, then: str) -> bool:
        return first in history and then in history[history.index(first) + 1:]

    histories = [model.history for model in models.values()]
    return {
        "annotated only": sum(1 for h in histories if h and "post" not in h),
        "feedback only": sum(1 for h in histories if h and set(h) == {"post"}),
        "feedback, then a scored annotation": sum(1 for h in histories if followed(h, "post", "scored")),
        "a scored annotation, then feedback": sum(1 for h in histories if followed(h, "scored", "post")),
        "unscored over feedback": sum(1 for h in histories if followed(h, "post", "unscored")),
        "cleared": sum(1 for h in histories if "cleared" in h),
        "cleared, then scored again": sum(1 for h in histories if followed(h, "cleared", "scored")),
        "given on an earlier day, then annotated": sum(1 for m in models.values() if m.entry and m.history and
                                                       m.entry[2] < dt.datetime.now(UTC).date() and
                                                       "scored" in m.history),
        "no entry at the end": sum(1 for m in models.values() if m.entry is None),
    }
