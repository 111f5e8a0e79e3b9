"""Provisional calls: recorded from a feedback post for a call Twilio had not told us of yet
(api/feedback.py), until a status callback or `calls sync` confirms them.

A typo'd SID is one too, and it counted as a call (and its feedback) for good. So for an account
whose calls come from a call source (any confirmed call: status callbacks, `calls sync`, an
import), a provisional call that nothing confirmed within PROVISIONAL_CALL_GRACE_S is removed with
its feedback; the rollups follow through their triggers. An account with no call source at all
keeps its provisional calls: they are the only calls it has. A provisional call that another
account claimed (Twilio's signed status event for it came from that account) goes to that account
instead. Operators list and remove them (`summaries calls provisional`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, text

EXPIRY_BATCH = 1000


@dataclass(frozen=True)
class ProvisionalCall:
    sid: str
    account_sid: str
    posted_at: dt.datetime  # its start_time: when the feedback post recorded it
    quality_score: int | None  # its feedback's, if any
    expires_at: dt.datetime | None  # None: its account has no call source (and nobody claimed it), so it is kept
    claimed_by: str | None  # an account whose signed status event named the call: it gets the call then


_LIST = text("""
SELECT c.sid, c.account_sid, c.start_time, f.quality_score,
       CASE WHEN c.claimed_by IS NOT NULL
              OR EXISTS (SELECT 1 FROM calls k WHERE k.account_sid = c.account_sid AND NOT k.provisional)
            THEN c.start_time + make_interval(secs => :grace_s) END,
       c.claimed_by
FROM calls c LEFT JOIN call_feedback f ON f.call_sid = c.sid
WHERE c.provisional AND (CAST(:account AS varchar) IS NULL OR c.account_sid = :account)
ORDER BY c.start_time
LIMIT :limit
""")


def listed(connection: Connection, grace_s: int, account_sid: str | None = None,
           limit: int = 100) -> list[ProvisionalCall]:
    rows = connection.execute(_LIST, {"grace_s": grace_s, "account": account_sid, "limit": limit})
    return [ProvisionalCall(*row) for row in rows]


_REMOVE = text("DELETE FROM calls WHERE sid = ANY(:sids) AND provisional RETURNING sid")


def remove(connection: Connection, sids: list[str]) -> list[str]:
    """Remove these calls, with their feedback, if they are still provisional; the SIDs removed."""
    return list(connection.execute(_REMOVE, {"sids": sids}).scalars())


# A provisional call another account has claimed (its signed status event named the call while the
# poster held it: api/voice_status.py) goes to that account when the grace ends unconfirmed: Twilio's
# own event outweighs a post nothing confirmed, and the call is not lost to its owner.
_HAND_OVER = text("""
WITH due AS (
    SELECT sid FROM calls
    WHERE provisional AND claimed_by IS NOT NULL AND start_time < now() - make_interval(secs => :grace_s)
    ORDER BY start_time LIMIT :batch FOR UPDATE SKIP LOCKED
)
UPDATE calls c SET account_sid = c.claimed_by, start_time = c.claimed_start_time, provisional = false,
    claimed_by = NULL, claimed_start_time = NULL
FROM due WHERE c.sid = due.sid AND c.provisional AND c.claimed_by IS NOT NULL
RETURNING c.sid, c.account_sid
""")

# Accounts first (from the partial index, a handful of rows), each asked once whether it has a
# confirmed call; then that batch of their expired, unclaimed calls, locked without waiting on a
# status callback that is confirming one right now (SKIP LOCKED), and removed only if still
# provisional.
_EXPIRE = text("""
WITH expired AS (
    SELECT DISTINCT account_sid FROM calls WHERE provisional AND start_time < now() - make_interval(secs => :grace_s)
), sourced AS (
    SELECT account_sid FROM expired e
    WHERE EXISTS (SELECT 1 FROM calls k WHERE k.account_sid = e.account_sid AND NOT k.provisional)
), doomed AS (
    SELECT c.sid FROM calls c JOIN sourced s ON s.account_sid = c.account_sid
    WHERE c.provisional AND c.claimed_by IS NULL AND c.start_time < now() - make_interval(secs => :grace_s)
    ORDER BY c.start_time LIMIT :batch FOR UPDATE OF c SKIP LOCKED
)
DELETE FROM calls c USING doomed WHERE c.sid = doomed.sid AND c.provisional AND c.claimed_by IS NULL
RETURNING c.sid, c.account_sid
""")


def hand_over(connection: Connection, grace_s: int, batch: int = EXPIRY_BATCH) -> list[tuple[str, str]]:
    """Give one batch of the claimed provisional calls past their grace to the accounts that claimed
    them (the poster's feedback goes, as on any move); (sid, new account) of each."""
    return [tuple(row) for row in connection.execute(_HAND_OVER, {"grace_s": grace_s, "batch": batch})]


def expire(connection: Connection, grace_s: int, batch: int = EXPIRY_BATCH) -> list[tuple[str, str]]:
    """Remove one batch of the unclaimed provisional calls past their grace whose account has a call
    source; (sid, account_sid) of each."""
    return [tuple(row) for row in connection.execute(_EXPIRE, {"grace_s": grace_s, "batch": batch})]
