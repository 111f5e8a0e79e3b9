"""Call annotations, Twilio's Voice Insights successor to Call Feedback: one per call, and, with a
call score, that call's feedback entry (SPEC, Call Annotations). The only code that writes
`call_annotations` (the API's update), and what reads it (the API's fetch, `summaries calls show`).

A call has one entry, and a Feedback post and an annotation update both write it: the later write
sets its score and issues, and an update that clears the score removes it. "Later" is the order of
their commits, which the call's row fixes; an update is one statement (WRITE) that
1. locks the call's row FOR NO KEY UPDATE, which waits for every Feedback post of the call still
   running (a post holds the row FOR SHARE from its first statement to its commit, api/feedback.py)
   and for any other update of it, and makes later ones wait for this one;
2. merges the update into the annotation by INSERT ... ON CONFLICT DO UPDATE, which works on the
   annotation as last committed even when the statement waited for the lock (a plain read in it
   would see the annotation as of the statement's start: tests/test_rollup_concurrency.py caught an
   update lost that way);
3. writes the entry from the merged annotation when it has a score, with the Feedback endpoint's
   own upsert, so date_created stays when the call was first given a score.
Clearing the score removes the entry by a DELETE, and a DELETE sees only rows committed before its
statement began: a post's entry committed while WRITE waited would survive the clear that followed
it. So a clear is a transaction: WRITE, then the DELETE in a statement of its own (annotate()). The
rollups follow the entry through their triggers (migration 0007), whoever wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sqlalchemy import Connection, text

from shared.models import FEEDBACK_ISSUES, CallAnnotation

# SPEC, Call Annotations: which feedback issue each annotation value reports.
QUALITY_ISSUE_FEEDBACK = {"latency": "audio-latency", "dtmf": "digits-not-captured", "owa": "one-way-audio",
                          "choppy_robotic": "imperfect-audio", "echo": "imperfect-audio",
                          "static_noise": "imperfect-audio", "low_volume": "imperfect-audio"}
CONNECTIVITY_ISSUE_FEEDBACK = {"dropped_call": "dropped-call", "caller_id": "incorrect-caller-id"}
SPAM_FEEDBACK = "unsolicited-call"


@dataclass(frozen=True)
class Annotation:
    """What an annotation says; every field None until an update sets it."""

    answered_by: str | None = None
    connectivity_issue: str | None = None
    quality_issues: tuple[str, ...] | None = None
    spam: bool | None = None
    call_score: int | None = None
    comment: str | None = None
    incident: str | None = None

    @classmethod
    def from_row(cls, values) -> Annotation:
        answered_by, connectivity_issue, quality_issues, *rest = values
        return cls(answered_by, connectivity_issue, tuple(quality_issues) if quality_issues is not None else None,
                   *rest)

    def feedback_issues(self) -> list[str]:
        """The feedback issues it reports, each once, in FEEDBACK_ISSUES's order."""
        found = {QUALITY_ISSUE_FEEDBACK[issue] for issue in self.quality_issues or ()
                 if issue in QUALITY_ISSUE_FEEDBACK}
        if self.connectivity_issue in CONNECTIVITY_ISSUE_FEEDBACK:
            found.add(CONNECTIVITY_ISSUE_FEEDBACK[self.connectivity_issue])
        if self.spam:
            found.add(SPAM_FEEDBACK)
        return [issue for issue in FEEDBACK_ISSUES if issue in found]


FIELDS = tuple(field.name for field in fields(Annotation))
_table = CallAnnotation.__table__.c
_ANNOTATION = ", ".join(f"a.{name}" for name in FIELDS)
_COLUMNS = (_table.account_sid, *(_table[name] for name in FIELDS))
# The credentials' account, or (a parent's credentials) one of its subaccounts.
_FAMILY = ("(c.account_sid = :caller OR EXISTS (SELECT 1 FROM accounts s WHERE s.sid = c.account_sid "
           "AND s.parent_sid = :caller))")
READ = text(f"SELECT c.account_sid, {_ANNOTATION} FROM calls c LEFT JOIN call_annotations a ON a.call_sid = c.sid\n"
            f"WHERE c.sid = :call_sid AND {_FAMILY}").columns(*_COLUMNS)


def _reported_sql(issue: str) -> str | None:
    """The SQL condition on an annotation row `a` under which it reports this feedback issue."""
    quality = [value for value, reported in QUALITY_ISSUE_FEEDBACK.items() if reported == issue]
    connectivity = [value for value, reported in CONNECTIVITY_ISSUE_FEEDBACK.items() if reported == issue]
    conditions = ([f"a.quality_issues && ARRAY[{', '.join(repr(v) for v in quality)}]::text[]"] if quality else []) + \
        ([f"a.connectivity_issue IN ({', '.join(repr(v) for v in connectivity)})"] if connectivity else []) + \
        (["a.spam"] if issue == SPAM_FEEDBACK else [])
    return " OR ".join(conditions) or None


# The feedback issues of the merged annotation, in FEEDBACK_ISSUES's order (Annotation.feedback_issues
# in SQL; tests/test_api_annotations.py holds the two to each other).
ISSUES_SQL = "array_remove(ARRAY[{}]::text[], NULL)".format(", ".join(
    f"CASE WHEN {condition} THEN '{issue}' END" for issue in FEEDBACK_ISSUES
    if (condition := _reported_sql(issue)) is not None))
# A field the update does not carry keeps its value: `:sets_<field>` says which it carries.
_MERGE = ",\n    ".join(f"{name} = CASE WHEN :sets_{name} THEN excluded.{name} ELSE a.{name} END" for name in FIELDS)
_VALUES = ", ".join("CAST(:quality_issues AS text[])" if name == "quality_issues" else f":{name}" for name in FIELDS)
WRITE = text(f"""WITH c AS (
    SELECT c.sid, c.account_sid FROM calls c WHERE c.sid = :call_sid AND {_FAMILY} FOR NO KEY UPDATE OF c),
a AS (INSERT INTO call_annotations AS a (call_sid, account_sid, {", ".join(FIELDS)})
    SELECT c.sid, c.account_sid, {_VALUES} FROM c
    ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid,
    {_MERGE},
    date_updated = now()
    RETURNING a.account_sid, {_ANNOTATION}, {ISSUES_SQL} AS issues),
-- The Feedback endpoint's upsert (api/feedback.py, UPSERT_FEEDBACK), the score and issues the annotation's.
entry AS (INSERT INTO call_feedback AS f (call_sid, account_sid, quality_score, issues)
    SELECT :call_sid, a.account_sid, a.call_score, a.issues FROM a WHERE a.call_score IS NOT NULL
    ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid, quality_score = excluded.quality_score,
    issues = excluded.issues, date_updated = now()
    RETURNING 1)
SELECT account_sid, {", ".join(FIELDS)} FROM a""").columns(*_COLUMNS)
REMOVE_ENTRY = text("DELETE FROM call_feedback WHERE call_sid = :call_sid")
# A call Twilio has not told us of yet: recorded from the update, as a Feedback post records one
# (api/feedback.py), under the credentials' account, for a status callback or a sync to confirm.
RECORD_PROVISIONAL = text("INSERT INTO calls (sid, account_sid, start_time, provisional) "
                          "VALUES (:call_sid, :caller, now(), true) ON CONFLICT (sid) DO NOTHING RETURNING account_sid")


def clears_score(update: dict[str, object]) -> bool:
    """CallScore sent empty: the update removes the call's feedback entry, whoever wrote it."""
    return "call_score" in update and update["call_score"] is None


def write(connection: Connection, caller_sid: str, call_sid: str,
          update: dict[str, object]) -> tuple[str, Annotation] | None:
    """WRITE: `update` (field -> value, the fields the request carried, checked) merged into the
    annotation of a known call of the caller or its subaccounts, and the entry written if it has a
    score. The call's account and the annotation as it now is; None for any other call. Whole on
    its own (an autocommit statement) unless the update clears the score: then annotate()."""
    values = {"call_sid": call_sid, "caller": caller_sid, **{f"sets_{name}": name in update for name in FIELDS},
              **{name: update.get(name) for name in FIELDS}}
    if values["quality_issues"] is not None:
        values["quality_issues"] = list(values["quality_issues"])  # a PostgreSQL array
    found = connection.execute(WRITE, values).first()
    return (found[0], Annotation.from_row(found[1:])) if found is not None else None


def annotate(connection: Connection, caller_sid: str, call_sid: str,
             update: dict[str, object]) -> tuple[str, Annotation] | None:
    """The whole update, in the connection's transaction (the caller commits): WRITE; a call not
    known yet recorded as the caller's first; the entry removed after it when the score is cleared.
    None when the call is another account's (not the caller's nor its subaccounts')."""
    annotated = write(connection, caller_sid, call_sid, update)
    if annotated is None:
        # Not recorded when the call is another account's, or one of the family recorded it meanwhile.
        connection.execute(RECORD_PROVISIONAL, {"call_sid": call_sid, "caller": caller_sid})
        annotated = write(connection, caller_sid, call_sid, update)
        if annotated is None:
            return None
    if clears_score(update):
        connection.execute(REMOVE_ENTRY, {"call_sid": call_sid})
    return annotated


def read(connection: Connection, caller_sid: str, call_sid: str) -> tuple[str, Annotation] | None:
    """The call's account and annotation (every field None if it has none), if the call is the
    caller's or one of its subaccounts'."""
    found = connection.execute(READ, {"call_sid": call_sid, "caller": caller_sid}).first()
    return (found[0], Annotation.from_row(found[1:])) if found is not None else None
