"""Realistic synthetic calls and feedback, generated inside PostgreSQL (no rows pass through Python).

About one call in five gets feedback; scores lean high (5: 45%, 4: 30%, 3: 12%, 2: 8%, 1: 5%);
issues come mostly with low scores. Feedback is given within two hours of the call's start.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from shared.models import FEEDBACK_ISSUES
from shared.platform.db import lift_statement_timeout

BATCH_CALLS = 500_000
_ISSUES = "ARRAY[" + ",".join(f"'{issue}'" for issue in FEEDBACK_ISSUES) + "]"

SEED_SQL = text(f"""
WITH new_calls AS (
    INSERT INTO calls (sid, account_sid, start_time)
    SELECT 'CA' || md5(:account || ':' || :batch || ':' || g || ':' || random()::text), :account,
           now() - random() * make_interval(days => :days)
    FROM generate_series(1, :count) AS g
    ON CONFLICT (sid) DO NOTHING
    RETURNING sid, start_time
), picked AS (
    SELECT sid, start_time, random() AS r FROM new_calls WHERE random() < 0.2
), scored AS (
    SELECT sid, start_time + random() * interval '2 hours' AS given_at,
           CASE WHEN r < 0.05 THEN 1 WHEN r < 0.13 THEN 2 WHEN r < 0.25 THEN 3 WHEN r < 0.55 THEN 4 ELSE 5 END
               AS score
    FROM picked
)
INSERT INTO call_feedback (call_sid, account_sid, quality_score, issues, date_created, date_updated)
SELECT sid, :account, score,
       ARRAY(SELECT issue FROM unnest({_ISSUES}) AS issue
             WHERE random() < CASE score WHEN 1 THEN 0.35 WHEN 2 THEN 0.25 WHEN 3 THEN 0.08
                                         WHEN 4 THEN 0.02 ELSE 0.005 END),
       given_at, given_at
FROM scored
""")


def seed(connection: Connection, account_sid: str, calls: int, days: int) -> None:
    """Add `calls` calls spread over the last `days` days, committing every BATCH_CALLS."""
    done, batch = 0, 0
    while done < calls:
        count = min(BATCH_CALLS, calls - done)
        lift_statement_timeout(connection)  # half a million calls a statement: seconds
        connection.execute(SEED_SQL, {"account": account_sid, "batch": batch, "count": count, "days": days})
        connection.commit()
        done += count
        batch += 1
