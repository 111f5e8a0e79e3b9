"""The console row's data (issue 23's target: each page at 1,000,000 summaries and 5,000,000 callback
attempts), generated inside PostgreSQL (INSERT … SELECT over generate_series, no row through Python)
in batches of BATCH summaries, each batch one transaction, then vacuumed and analysed.

What a busy install would hold after a month: summaries spread over the last 30 days across ACCOUNTS
accounts (a few much busier than the rest), 93 % completed, 5 % failed, 2 % queued or in progress
(created in the last two hours: a backlog); each with its timeline (created, in-progress, then
completed or failed, seconds to minutes apart); a callback delivery for 90 % of the finished ones,
to HOSTS hosts (each account a few of them; a few hosts mostly failing, some flaky, most healthy);
and each delivery's attempts on the callbacks worker's backoff (60 s doubling, capped at 6 h, 12 at
most), as many per delivery on average as the target asks, the last one deciding the delivery's
state; attempts not yet due at build time leave their delivery pending. Plus each account's last
voice status callback (account_activity).

Written straight into the tables (bench code, not product code), under its own accounts, named by
size, so a second run finds it again. It is rebuilt when the size changes, when a build was cut
short, or when it is older than MAX_AGE: the pages read the last hours (the overview computes the
current hour on every request, the destinations the last 24), which an older dataset leaves empty,
so they would look cheaper than they are. A rebuild first empties the summaries' tables (_empty says
why). Building takes 4 to 6 minutes at full size on 2 cores.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from cli.accounts import create_account
from shared.models import Account
from shared.platform.db import lift_statement_timeout, untimed_autocommit

ACCOUNTS = 40
HOSTS = 300
BATCH = 100_000  # summaries per transaction (with their events, deliveries and attempts)
MAX_AGE = dt.timedelta(hours=1)
CALLBACK_SHARE = 0.9  # of the finished summaries, those with a StatusCallback
MAX_ATTEMPTS = 12  # CALLBACK_MAX_ATTEMPTS' default
TABLES = ("feedback_summaries", "summary_events", "callback_deliveries", "callback_attempts", "account_activity")


def _offsets() -> list[float]:
    """Seconds from a delivery's first attempt to its n-th (index n-1): the worker's backoff
    (CALLBACK_BACKOFF_INITIAL_S 60 doubling, CALLBACK_BACKOFF_MAX_S 6 h) at its mean jitter (3/4)."""
    offsets, total = [], 0.0
    for attempt in range(1, MAX_ATTEMPTS + 1):
        offsets.append(total)
        total += 0.75 * min(6 * 3600.0, 60.0 * 2 ** (attempt - 1))
    return offsets


# One batch's plan: every random draw once per summary, then what follows from them. `happened` is
# how many of a delivery's planned attempts are due by :built (the attempts are on the backoff
# schedule from the summary's completion, stretched by the delivery's jitter).
_PLAN = text("""
CREATE TEMP TABLE bench_console_plan ON COMMIT DROP AS
SELECT d.*,
       CASE WHEN d.status IN ('completed', 'failed') AND d.has_callback THEN
           (SELECT count(*)::int FROM unnest((CAST(:offsets AS float8[]))[1:d.n]) AS o
            WHERE d.finish_at + make_interval(secs => o * d.jitter) <= :built)
       END AS happened
FROM (
    SELECT c.*,
           CASE WHEN c.planned IN ('completed', 'failed') AND c.finish_at <= :built THEN c.planned
                WHEN c.planned = 'queued' OR c.claim_at > :built THEN 'queued'
                ELSE 'in-progress' END AS status,
           'cb' || lpad(c.host_number::text, 3, '0') || '.hooks-' || (c.host_number % 37) || '.example' AS host,
           CASE WHEN c.r_deliver >= c.fail_share THEN 'delivered'
                WHEN c.r_deliver < 0.4 * c.fail_share THEN 'refused'  -- a final 4xx after a few tries
                ELSE 'exhausted' END AS outcome,  -- every attempt of the budget answered 5xx
           CASE WHEN c.r_deliver >= c.fail_share THEN least(:max_attempts, 1 + floor(c.r_attempts * :spread)::int)
                WHEN c.r_deliver < 0.4 * c.fail_share THEN 1 + floor(c.r_attempts * 3)::int
                ELSE :max_attempts END AS n
    FROM (
        SELECT b.*,
               b.created + make_interval(secs => 0.05 + 2 * b.r_claim ^ 2) AS claim_at,
               b.created + make_interval(secs => 0.05 + 2 * b.r_claim ^ 2 + 0.3 + 600 * b.r_done ^ 4) AS finish_at,
               CASE WHEN (b.host_number * 7) % 20 = 0 THEN 0.6  -- a few hosts mostly failing
                    WHEN (b.host_number * 7) % 20 < 4 THEN 0.1  -- some flaky
                    ELSE 0.005 END AS fail_share
        FROM (
            SELECT a.*,
                   (CAST(:accounts AS text[]))[1 + a.account_number] AS account_sid,
                   CASE WHEN a.r_status < 0.93 THEN 'completed' WHEN a.r_status < 0.98 THEN 'failed'
                        WHEN a.r_status < 0.99 THEN 'in-progress' ELSE 'queued' END AS planned,
                   CASE WHEN a.r_status < 0.98 THEN CAST(:built AS timestamptz) - a.r_time * interval '30 days'
                        ELSE CAST(:built AS timestamptz) - a.r_time * interval '2 hours' END AS created,
                   (a.account_number * 8 + floor(a.r_host * 8)::int) % :hosts AS host_number,
                   a.r_callback < :callback_share AS has_callback,
                   0.8 + 0.4 * a.r_jitter AS jitter,
                   'bench-worker-' || (a.g % 4) || '/' || md5(a.sid || '/task') AS owner
            FROM (
                SELECT r.*, floor(cardinality(CAST(:accounts AS text[])) * r.r_account ^ 2)::int AS account_number
                FROM (
                    SELECT g, 'FS' || md5('bench-console:' || g) AS sid,
                           random() AS r_status, random() AS r_account, random() AS r_time, random() AS r_claim,
                           random() AS r_done, random() AS r_callback, random() AS r_host, random() AS r_deliver,
                           random() AS r_attempts, random() AS r_jitter
                    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
                ) r
            ) a
        ) b
    ) c
) d""")

_SUMMARIES = text("""
INSERT INTO feedback_summaries (sid, account_sid, start_date, end_date, include_subaccounts, status,
    status_callback, status_callback_method, call_count, call_feedback_count, quality_score_average,
    quality_score_median, quality_score_standard_deviation, issues, request_id, failure_reason, claimed_by,
    lease_expires_at, attempts, date_created, date_updated)
SELECT sid, account_sid, (created AT TIME ZONE 'UTC')::date - 30, (created AT TIME ZONE 'UTC')::date, false, status,
       CASE WHEN has_callback THEN 'https://' || host || '/twilio/feedback-summaries' END, 'POST',
       CASE WHEN status = 'completed' THEN 200 + (r_done * 5000)::int END,
       CASE WHEN status = 'completed' THEN 40 + (r_done * 1000)::int END,
       CASE WHEN status = 'completed' THEN 4.1 END, CASE WHEN status = 'completed' THEN 4 END,
       CASE WHEN status = 'completed' THEN 1.02 END,
       CASE WHEN status = 'completed' THEN '[]'::jsonb END,
       'RQ' || md5(sid), CASE WHEN status = 'failed' THEN 'the database cancelled the aggregate (statement timeout)' END,
       CASE WHEN status <> 'queued' THEN owner END,
       CASE WHEN status = 'in-progress' THEN claim_at + interval '5 minutes' END,
       CASE WHEN status = 'queued' THEN 0 ELSE 1 END,
       created, CASE status WHEN 'queued' THEN created WHEN 'in-progress' THEN claim_at ELSE finish_at END
FROM bench_console_plan ORDER BY sid""")

_EVENTS = text("""
INSERT INTO summary_events (summary_sid, at, kind, actor, detail)
SELECT sid, at, kind, actor, detail FROM (
    SELECT sid, created AS at, 'created' AS kind, 'RQ' || md5(sid) AS actor, NULL::jsonb AS detail FROM bench_console_plan
    UNION ALL
    SELECT sid, claim_at, 'in-progress', owner, NULL FROM bench_console_plan WHERE status <> 'queued'
    UNION ALL
    SELECT sid, finish_at, status, owner,
           CASE WHEN status = 'failed' THEN
               jsonb_build_object('reason', 'the database cancelled the aggregate (statement timeout)') END
    FROM bench_console_plan WHERE status IN ('completed', 'failed')
) e ORDER BY sid, at""")

_DELIVERIES = text("""
INSERT INTO callback_deliveries (summary_sid, account_sid, url, host, method, params, idempotency_token, state,
    attempts, attempt_limit, next_attempt_at, last_error, redeliveries, delivered_at, date_created, date_updated)
SELECT sid, account_sid, 'https://' || host || '/twilio/feedback-summaries', host, 'POST',
       jsonb_build_object('AccountSid', account_sid, 'FeedbackSummarySid', sid, 'Status', status), md5(sid || '/token'),
       state, happened, :max_attempts, CASE WHEN state = 'pending' THEN next_at ELSE last_at END,
       CASE WHEN state = 'delivered' THEN NULL WHEN outcome = 'refused' AND state = 'failed' THEN 'HTTP 410'
            ELSE 'HTTP 503' END,
       0, CASE WHEN state = 'delivered' THEN last_at END, finish_at, last_at
FROM (
    SELECT p.*, CASE WHEN happened < n THEN 'pending' WHEN outcome = 'delivered' THEN 'delivered' ELSE 'failed' END AS state,
           finish_at + make_interval(secs => (CAST(:offsets AS float8[]))[happened] * jitter) AS last_at,
           finish_at + make_interval(secs => (CAST(:offsets AS float8[]))[least(happened + 1, n)] * jitter) AS next_at
    FROM bench_console_plan p WHERE status IN ('completed', 'failed') AND has_callback
) d ORDER BY sid""")

_ATTEMPTS = text("""
INSERT INTO callback_attempts (summary_sid, number, attempted_at, outcome, status_code, error, latency_ms,
                               response_excerpt)
SELECT sid, i, finish_at + make_interval(secs => (CAST(:offsets AS float8[]))[i] * jitter),
       CASE WHEN i < n THEN 'retry' WHEN outcome = 'delivered' THEN 'delivered' ELSE 'failed' END,
       CASE WHEN i < n THEN CASE WHEN (g + i) % 5 = 0 THEN NULL ELSE 503 END
            WHEN outcome = 'delivered' THEN 200 WHEN outcome = 'refused' THEN 410 ELSE 503 END,
       CASE WHEN i < n AND (g + i) % 5 = 0 THEN 'connection timed out' END,
       15 + ((g * 31 + i * 17) % 900)::int,
       CASE WHEN i < n AND (g + i) % 5 = 0 THEN NULL WHEN i = n AND outcome = 'delivered' THEN 'ok'
            WHEN outcome = 'refused' AND i = n THEN '<html><h1>410 Gone</h1></html>'
            ELSE '<html><h1>503 Service Unavailable</h1></html>' END
FROM bench_console_plan, generate_series(1, happened) AS i
WHERE status IN ('completed', 'failed') AND has_callback
ORDER BY sid, i""")

_ACTIVITY = text("""
INSERT INTO account_activity (account_sid, last_voice_status_at)
SELECT sid, CASE WHEN n % 13 = 12 THEN CAST(:built AS timestamptz) - interval '3 days'  -- a few went silent
                 ELSE CAST(:built AS timestamptz) - n * interval '20 seconds' END
FROM unnest(CAST(:accounts AS text[])) WITH ORDINALITY AS a(sid, n)
ON CONFLICT (account_sid) DO UPDATE SET last_voice_status_at = excluded.last_voice_status_at""")


@dataclass(frozen=True)
class ConsoleData:
    accounts: list[str]  # account SIDs, the busiest first
    summaries: int
    attempts: int
    built_at: dt.datetime


def _name(summaries: int, attempts: int, number: int) -> str:
    return f"bench console {summaries}/{attempts} {number}"


def _accounts(engine: Engine, summaries: int, attempts: int) -> list[str]:
    names = [_name(summaries, attempts, number) for number in range(ACCOUNTS)]
    with Session(engine) as session:
        found = dict(session.execute(select(Account.friendly_name, Account.sid)
                                     .where(Account.friendly_name.in_(names))).all())
        for name in names:
            if name not in found:
                found[name] = create_account(session, name).sid
        session.commit()
    return [found[name] for name in names]


def _others(engine: Engine, mine: list[str]) -> list[str]:
    """Accounts of console datasets of other sizes: their rows would be read by the pages too."""
    with engine.connect() as connection:
        return [sid for (sid,) in connection.execute(
            text("SELECT sid FROM accounts WHERE friendly_name LIKE 'bench console %' AND sid <> ALL(:mine)"),
            {"mine": mine})]


def _state(engine: Engine, accounts: list[str]) -> tuple[int, dt.datetime | None]:
    with engine.connect() as connection:
        count, newest = connection.execute(
            text("SELECT count(*), max(date_created) FROM feedback_summaries WHERE account_sid = ANY(:a)"),
            {"a": accounts}).one()
    return count, newest


def _empty(engine: Engine, accounts: list[str], log) -> None:
    """Empty the summaries' tables, so that a rebuild starts where a first build starts: deleting the
    old rows instead leaves the tables and their indexes larger (40 % for the heap, measured), and the
    pages slower for it. Whatever other rows left there goes too (their summaries and deliveries,
    which none of them reads again: each makes its own). The tables are named, not cascaded to: a new
    table referencing them stops this rather than being emptied unseen."""
    began = time.monotonic()
    with engine.begin() as connection:
        lift_statement_timeout(connection)
        connection.execute(text("TRUNCATE callback_attempts, callback_deliveries, summary_events, idempotency_keys, "
                                "feedback_summaries, console_chart_hours"))
        connection.execute(text("DELETE FROM account_activity WHERE account_sid = ANY(:a)"), {"a": accounts})
    log(f"  emptied in {time.monotonic() - began:.0f} s")


def _vacuum(engine: Engine) -> None:
    with untimed_autocommit(engine) as connection:
        connection.exec_driver_sql(f"VACUUM (ANALYZE) {', '.join(TABLES)}")


def _build(engine: Engine, accounts: list[str], summaries: int, attempts: int, log) -> dt.datetime:
    built = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    offsets = _offsets()
    # Attempts per delivery: the failed deliveries' (40 % refused after 1-3, 60 % after all 12: 8 on
    # average, about 5 % of the deliveries) and the delivered ones' 1 + floor(u * spread), whose mean
    # is about (1 + spread) / 2, together the target's average.
    deliveries = summaries * 0.98 * CALLBACK_SHARE
    per_delivered = (attempts / deliveries - 0.05 * 8) / 0.95
    spread = max(1.0, 2 * per_delivered - 1)
    params = {"built": built, "offsets": offsets, "accounts": accounts, "hosts": HOSTS,
              "callback_share": CALLBACK_SHARE, "max_attempts": MAX_ATTEMPTS, "spread": spread}
    began = time.monotonic()
    for first in range(1, summaries + 1, BATCH):
        last = min(summaries, first + BATCH - 1)
        with engine.begin() as connection:
            lift_statement_timeout(connection)
            connection.execute(_PLAN, {**params, "first": first, "last": last})
            for statement in (_SUMMARIES, _EVENTS, _DELIVERIES, _ATTEMPTS):
                connection.execute(statement, params)
        log(f"  {last:,} of {summaries:,} summaries ({time.monotonic() - began:.0f} s)")
    with engine.begin() as connection:
        connection.execute(_ACTIVITY, {"built": built, "accounts": accounts})
        connection.execute(text("DELETE FROM console_chart_hours"))
    _vacuum(engine)
    log(f"  built, vacuumed and analysed in {time.monotonic() - began:.0f} s")
    return built


def counts(engine: Engine, accounts: list[str]) -> dict[str, int]:
    """The dataset's rows, table by table (and the whole tables', which the pages read)."""
    with engine.connect() as connection:
        lift_statement_timeout(connection)
        row = connection.execute(text("""
SELECT (SELECT count(*) FROM feedback_summaries WHERE account_sid = ANY(:a)) AS summaries,
       (SELECT count(*) FROM summary_events e JOIN feedback_summaries s ON s.sid = e.summary_sid
        WHERE s.account_sid = ANY(:a)) AS events,
       (SELECT count(*) FROM callback_deliveries WHERE account_sid = ANY(:a)) AS deliveries,
       (SELECT count(*) FROM callback_attempts a JOIN callback_deliveries d ON d.summary_sid = a.summary_sid
        WHERE d.account_sid = ANY(:a)) AS attempts,
       (SELECT count(*) FROM feedback_summaries) AS all_summaries,
       (SELECT count(*) FROM callback_attempts) AS all_attempts"""), {"a": accounts}).one()
    return dict(row._mapping)


def ensure(engine: Engine, summaries: int, attempts: int, log=print) -> ConsoleData:
    accounts = _accounts(engine, summaries, attempts)
    others = _others(engine, accounts)
    if others:
        log(f"deleting the console dataset of another size ({len(others)} accounts)...")
        _empty(engine, others, log)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM accounts WHERE sid = ANY(:a)"), {"a": others})
    have, newest = _state(engine, accounts)
    now = dt.datetime.now(dt.timezone.utc)
    if have == summaries and newest is not None and now - newest <= MAX_AGE:
        built = newest
    else:
        if have:
            why = ("cut short" if have != summaries else
                   f"built {(now - newest) / dt.timedelta(minutes=1):.0f} min ago, more than {MAX_AGE}")
            log(f"the console dataset was {why}: deleting it...")
            _empty(engine, accounts, log)
        log(f"building the console dataset: {summaries:,} summaries and about {attempts:,} callback attempts "
            f"in batches of {BATCH:,} (rebuilt when older than {MAX_AGE})...")
        built = _build(engine, accounts, summaries, attempts, log)
    # The busiest account first (the pages' account view is measured on it).
    with engine.connect() as connection:
        lift_statement_timeout(connection)
        by_size = [sid for (sid,) in connection.execute(text(
            "SELECT account_sid FROM feedback_summaries WHERE account_sid = ANY(:a) GROUP BY 1 ORDER BY count(*) DESC"),
            {"a": accounts})]
    return ConsoleData(by_size + [a for a in accounts if a not in by_size], summaries, attempts, built)
