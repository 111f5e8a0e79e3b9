"""Call annotations, Twilio's Voice Insights successor to Call Feedback: one per call, and, with a
call score, that call's feedback entry (SPEC, Call Annotations). The only code that writes
`call_annotations` (the API's update), and what reads it (the API's fetch, `summaries calls show`).

An update and the call's feedback entry are written in one transaction. A call has one entry, and a
Feedback post and an annotation update both write it: the later write sets its score and issues,
and an update that clears the score removes it. "Later" is the order of their commits, which the
call's row fixes:
1. The update locks the call's row FOR NO KEY UPDATE. That waits for every Feedback post of the
   call still running (a post holds the row FOR SHARE from its first statement to its commit,
   api/feedback.py) and for any other update of it, and makes later ones wait for this one.
2. It reads the annotation and merges the update in Python (nothing else can write it meanwhile:
   every writer of an annotation holds its call's row, the moves and deletes of calls included).
3. One statement writes the annotation and the entry: the Feedback endpoint's own upsert, so
   date_created stays when the call was first given a score; or, when the score is cleared, a
   delete.
Steps 2 and 3 are statements of their own, after the lock's: a statement that waited for a lock
keeps the snapshot it started with, so a read in it would miss the annotation the writer it waited
for committed, and a delete in it a post's entry (tests/test_rollup_concurrency.py caught the first).
The rollups follow the entry through their triggers (migration 0007), whoever wrote it.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields, replace

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
# The credentials' account, or (a parent's credentials) one of its subaccounts.
_FAMILY = ("(c.account_sid = :caller OR EXISTS (SELECT 1 FROM accounts s WHERE s.sid = c.account_sid "
           "AND s.parent_sid = :caller))")
_COLUMNS = (_table.account_sid, *(_table[name] for name in FIELDS))
READ = text(f"SELECT c.account_sid, {_ANNOTATION} FROM calls c LEFT JOIN call_annotations a ON a.call_sid = c.sid\n"
            f"WHERE c.sid = :call_sid AND {_FAMILY}").columns(*_COLUMNS)
LOCK = text(f"SELECT c.account_sid FROM calls c WHERE c.sid = :call_sid AND {_FAMILY} FOR NO KEY UPDATE").columns(
    _table.account_sid)
ANNOTATION = text(f"SELECT {_ANNOTATION} FROM call_annotations a WHERE a.call_sid = :call_sid").columns(
    *_COLUMNS[1:])
# A call Twilio has not told us of yet: recorded from the update, as a Feedback post records one
# (api/feedback.py), under the credentials' account, for a status callback or a sync to confirm.
RECORD_PROVISIONAL = text("INSERT INTO calls (sid, account_sid, start_time, provisional) "
                          "VALUES (:call_sid, :caller, now(), true) ON CONFLICT (sid) DO NOTHING RETURNING account_sid")

_WRITE = f"""INSERT INTO call_annotations AS a (call_sid, account_sid, {", ".join(FIELDS)})
VALUES (:call_sid, :account_sid, :answered_by, :connectivity_issue, CAST(:quality_issues AS text[]), :spam,
        :call_score, :comment, :incident)
ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid,
    {", ".join(f"{name} = excluded.{name}" for name in FIELDS)}, date_updated = now()"""
# The Feedback endpoint's upsert (api/feedback.py, UPSERT_FEEDBACK), the score and issues the annotation's.
UPSERT_ENTRY = """INSERT INTO call_feedback AS f (call_sid, account_sid, quality_score, issues)
VALUES (:call_sid, :account_sid, :call_score, CAST(:issues AS text[]))
ON CONFLICT (call_sid) DO UPDATE SET account_sid = excluded.account_sid, quality_score = excluded.quality_score,
    issues = excluded.issues, date_updated = now()"""
REMOVE_ENTRY = "DELETE FROM call_feedback WHERE call_sid = :call_sid"
# By what the update does to the entry.
WRITE = {"write": text(f"WITH entry AS ({UPSERT_ENTRY}\nRETURNING 1)\n{_WRITE}"),
         "remove": text(f"WITH entry AS ({REMOVE_ENTRY} RETURNING 1)\n{_WRITE}"),
         "keep": text(_WRITE)}


def entry_change(update: dict, after: Annotation) -> str:
    """"write" when the annotation has a score after the update; "remove" when the update cleared it
    (CallScore sent empty); else "keep" the entry as it is (a Feedback post's, or none)."""
    if after.call_score is not None:
        return "write"
    return "remove" if "call_score" in update else "keep"


def annotate(connection: Connection, caller_sid: str, call_sid: str,
             update: dict[str, object]) -> tuple[str, Annotation] | None:
    """Apply `update` (field -> value, the fields the request carried, checked) to the call's
    annotation, and the SPEC's rule to its feedback entry, in the connection's transaction (the
    caller commits). The call's account and the annotation as it now is; None when the call is
    neither the caller's nor its subaccounts' (a call not known yet is recorded as the caller's)."""
    keys = {"call_sid": call_sid, "caller": caller_sid}
    account_sid = connection.execute(LOCK, keys).scalar()
    if account_sid is None:
        recorded = connection.execute(RECORD_PROVISIONAL, keys).scalar()
        if recorded is not None:  # a call recorded just now has no annotation yet
            return _write(connection, call_sid, recorded, Annotation(), update)
        # Not recorded: the call is another account's, or one of the family recorded it meanwhile.
        account_sid = connection.execute(LOCK, keys).scalar()
        if account_sid is None:
            return None
    stored = connection.execute(ANNOTATION, keys).first()
    return _write(connection, call_sid, account_sid, Annotation.from_row(stored) if stored else Annotation(), update)


def _write(connection: Connection, call_sid: str, account_sid: str, before: Annotation,
           update: dict[str, object]) -> tuple[str, Annotation]:
    after = replace(before, **update)
    values = dict(zip(FIELDS, astuple(after)), call_sid=call_sid, account_sid=account_sid,
                  issues=after.feedback_issues())
    values["quality_issues"] = list(after.quality_issues) if after.quality_issues is not None else None
    connection.execute(WRITE[entry_change(update, after)], values)
    return account_sid, after


def read(connection: Connection, caller_sid: str, call_sid: str) -> tuple[str, Annotation] | None:
    """The call's account and annotation (every field None if it has none), if the call is the
    caller's or one of its subaccounts'."""
    found = connection.execute(READ, {"call_sid": call_sid, "caller": caller_sid}).first()
    return (found[0], Annotation.from_row(found[1:])) if found is not None else None
