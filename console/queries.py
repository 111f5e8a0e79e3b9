"""What the console's pages read that the CLI does not: summaries and deliveries a page at a time
(keyset, newest first, filtered), destinations, accounts by day, open circuits. Every list reads by an
index of migration 0014 (or an older one), so a page costs the same at a million rows as at a hundred.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from redis import RedisError
from sqlalchemy import func, select, text, tuple_
from sqlalchemy.orm import Session

from shared.callbacks.circuit import FAILURES_KEY, OPEN_KEY
from shared.models import Account, AccountActivity, CallbackDelivery, FeedbackSummary
from shared.platform.db import get_engine
from shared.platform.queue import get_redis

PAGE_SIZE = 50
SUMMARY_SID = re.compile(r"FS[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
STATUSES = ("queued", "in-progress", "completed", "failed")
STATES = ("pending", "delivered", "failed")


class BadFilter(ValueError):
    """A filter in the URL that cannot be read; the page says which."""


@dataclass(frozen=True)
class Filters:
    """A list's filters, as the URL carries them (so a view can be bookmarked or pasted)."""

    status: str = ""  # a summary status, or a delivery state
    account: str = ""
    host: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    sid: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str], statuses: tuple[str, ...]) -> Filters:
        status = query.get("status", "").strip()
        if status and status not in statuses:
            raise BadFilter(f"status must be one of {', '.join(statuses)}")
        account = query.get("account", "").strip()
        if account and not ACCOUNT_SID.fullmatch(account):
            raise BadFilter("account must be an account SID (AC followed by 32 hex digits)")
        sid = query.get("sid", "").strip()
        if sid and not SUMMARY_SID.fullmatch(sid):
            raise BadFilter("sid must be a summary SID (FS followed by 32 hex digits)")
        host = query.get("host", "").strip().lower()
        if len(host) > 253:
            raise BadFilter("host is at most 253 characters")
        return cls(status, account, host, _time(query, "since"), _time(query, "until"), sid)

    def query(self) -> dict[str, str]:
        """The filters as URL parameters (the empty ones left out)."""
        values = {"status": self.status, "account": self.account, "host": self.host, "sid": self.sid,
                  "since": _iso(self.since), "until": _iso(self.until)}
        return {name: value for name, value in values.items() if value}


def _iso(moment: dt.datetime | None) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M") if moment else ""


def _time(query: dict[str, str], name: str) -> dt.datetime | None:
    raw = query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise BadFilter(f"{name} must be a time such as 2026-12-06T14:00 (UTC)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def cursor_of(moment: dt.datetime, sid: str) -> str:
    return f"{moment.isoformat()}~{sid}"


def _cursor(raw: str) -> tuple[dt.datetime, str] | None:
    if not raw:
        return None
    moment, _, sid = raw.partition("~")
    try:
        value = dt.datetime.fromisoformat(moment)
    except ValueError:
        raise BadFilter("the page cursor is not one this console wrote") from None
    if not SUMMARY_SID.fullmatch(sid) or value.tzinfo is None:
        raise BadFilter("the page cursor is not one this console wrote")
    return value, sid


def summaries(filters: Filters, before: str = "") -> tuple[list[dict], str | None]:
    """A page of summaries, newest first, and the cursor of the next page (None at the end)."""
    query = (select(FeedbackSummary.sid, FeedbackSummary.account_sid, FeedbackSummary.status,
                    FeedbackSummary.date_created, FeedbackSummary.date_updated, FeedbackSummary.attempts,
                    FeedbackSummary.failure_reason, CallbackDelivery.state.label("callback"),
                    CallbackDelivery.host)
             .outerjoin(CallbackDelivery, CallbackDelivery.summary_sid == FeedbackSummary.sid)
             .order_by(FeedbackSummary.date_created.desc(), FeedbackSummary.sid.desc()).limit(PAGE_SIZE + 1))
    if filters.status:
        query = query.where(FeedbackSummary.status == filters.status)
    if filters.account:
        query = query.where(FeedbackSummary.account_sid == filters.account)
    if filters.host:
        query = query.where(CallbackDelivery.host == filters.host)
    if filters.sid:
        query = query.where(FeedbackSummary.sid == filters.sid)
    if filters.since:
        query = query.where(FeedbackSummary.date_created >= filters.since)
    if filters.until:
        query = query.where(FeedbackSummary.date_created < filters.until)
    after = _cursor(before)
    if after:
        query = query.where(tuple_(FeedbackSummary.date_created, FeedbackSummary.sid) < after)
    with Session(get_engine()) as session:
        if filters.host and not filters.sid and _few_deliveries(session, filters.host):
            # A host with few deliveries: its summaries first (the host's index), then sorted. Walking
            # every summary newest first for the few of one host took seconds (a host never seen: all).
            host_sids = (select(CallbackDelivery.summary_sid).where(CallbackDelivery.host == filters.host)
                         .cte("host_sids").prefix_with("MATERIALIZED", dialect="postgresql"))
            query = query.where(FeedbackSummary.sid.in_(select(host_sids.c.summary_sid)))
        rows = [dict(row._mapping) for row in session.execute(query)]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, cursor_of(rows[-1]["date_created"], rows[-1]["sid"]) if more else None


FEW_DELIVERIES = 5_000  # under it (19 µs a delivery), a host's summaries are fetched by host; over it, walked newest first


def _few_deliveries(session: Session, host: str) -> bool:
    """Whether the host has fewer than FEW_DELIVERIES deliveries: counted on (host, date_updated) up
    to that many at most, so asking costs no more than the answer is worth."""
    capped = select(CallbackDelivery.summary_sid).where(CallbackDelivery.host == host).limit(FEW_DELIVERIES)
    return session.scalar(select(func.count()).select_from(capped.subquery())) < FEW_DELIVERIES


def delivery_conditions(filters: Filters) -> list:
    conditions = []
    if filters.status:
        conditions.append(CallbackDelivery.state == filters.status)
    if filters.account:
        conditions.append(CallbackDelivery.account_sid == filters.account)
    if filters.host:
        conditions.append(CallbackDelivery.host == filters.host)
    if filters.sid:
        conditions.append(CallbackDelivery.summary_sid == filters.sid)
    if filters.since:
        conditions.append(CallbackDelivery.date_updated >= filters.since)
    if filters.until:
        conditions.append(CallbackDelivery.date_updated < filters.until)
    return conditions


def deliveries(filters: Filters, before: str = "") -> tuple[list[dict], str | None]:
    """A page of deliveries, most recently changed first, and the next page's cursor."""
    query = (select(CallbackDelivery.summary_sid, CallbackDelivery.account_sid, CallbackDelivery.state,
                    CallbackDelivery.method, CallbackDelivery.url, CallbackDelivery.host, CallbackDelivery.attempts,
                    CallbackDelivery.last_error, CallbackDelivery.redeliveries, CallbackDelivery.date_updated,
                    CallbackDelivery.next_attempt_at)
             .where(*delivery_conditions(filters))
             .order_by(CallbackDelivery.date_updated.desc(), CallbackDelivery.summary_sid.desc())
             .limit(PAGE_SIZE + 1))
    after = _cursor(before)
    if after:
        query = query.where(tuple_(CallbackDelivery.date_updated, CallbackDelivery.summary_sid) < after)
    with Session(get_engine()) as session:
        rows = [dict(row._mapping) for row in session.execute(query)]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, cursor_of(rows[-1]["date_updated"], rows[-1]["summary_sid"]) if more else None


_LAST_ERRORS = text("""
SELECT h.host, e.last_error, e.date_updated, d.delivered_at
FROM unnest(CAST(:hosts AS text[])) AS h(host)
LEFT JOIN LATERAL (SELECT last_error, date_updated FROM callback_deliveries
                   WHERE host = h.host AND last_error IS NOT NULL ORDER BY date_updated DESC LIMIT 1) e ON true
LEFT JOIN LATERAL (SELECT delivered_at FROM callback_deliveries
                   WHERE host = h.host AND state = 'delivered' ORDER BY date_updated DESC LIMIT 1) d ON true""")


def destination_details(hosts: list[str]) -> dict[str, dict]:
    """Each host's last error (and when) and last delivery: a walk down (host, date_updated) per host."""
    if not hosts:
        return {}
    with Session(get_engine()) as session:
        return {row.host: {"last_error": row.last_error, "last_error_at": row.date_updated,
                           "last_delivered_at": row.delivered_at}
                for row in session.execute(_LAST_ERRORS, {"hosts": hosts})}


CIRCUIT_SCAN_LIMIT = 1000


def circuits(threshold: int) -> tuple[list[dict], str | None]:
    """The circuits that are open or counting failures (account, resolved address), from Redis, where
    the callback workers keep them; and why not, when Redis cannot be read. Past its cooldown a circuit
    at `threshold` failures is half-open: the next attempt is its probe."""
    try:
        redis = get_redis()
        found: dict[str, dict] = {}
        for prefix, field_name in ((OPEN_KEY, "open"), (FAILURES_KEY, "failures")):
            pattern = prefix.format(key="*")
            for number, key in enumerate(redis.scan_iter(match=pattern, count=500)):
                if number >= CIRCUIT_SCAN_LIMIT:
                    break
                name = (key.decode() if isinstance(key, bytes) else key)[len(pattern) - 1:]
                found.setdefault(name, {"key": name})[field_name] = key
        rows = []
        for name, entry in found.items():
            account, _, address = name.partition(":")
            open_ms = redis.pttl(OPEN_KEY.format(key=name))
            failures = redis.get(FAILURES_KEY.format(key=name))
            failures = int(failures) if failures else 0
            rows.append({"account_sid": account, "address": address, "open": open_ms > 0,
                         "half_open": open_ms <= 0 and failures >= threshold,
                         "reopens_in_s": round(open_ms / 1000) if open_ms > 0 else None,
                         "failures": failures})
    except RedisError as error:
        return [], f"Redis unreachable ({type(error).__name__}): circuits unknown"
    rows.sort(key=lambda row: (not row["open"], -row["failures"], row["account_sid"], row["address"]))
    return rows, None


def accounts(before: str = "") -> tuple[list[dict], str | None]:
    """Accounts by SID, a page at a time, with when each last heard from Twilio's voice status callback."""
    query = (select(Account.sid, Account.friendly_name, Account.parent_sid, AccountActivity.last_voice_status_at)
             .outerjoin(AccountActivity, AccountActivity.account_sid == Account.sid)
             .order_by(Account.sid).limit(PAGE_SIZE + 1))
    if before:
        if not ACCOUNT_SID.fullmatch(before):
            raise BadFilter("the page cursor is not one this console wrote")
        query = query.where(Account.sid > before)
    with Session(get_engine()) as session:
        rows = [dict(row._mapping) for row in session.execute(query)]
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return rows, rows[-1]["sid"] if more else None


_ACCOUNT_DAYS = text("""
WITH days AS (SELECT d::date AS day FROM generate_series(CAST(:first AS date), CAST(:last AS date), '1 day') d),
calls AS (SELECT day, sum(calls) AS n FROM (
            SELECT day, calls FROM daily_calls WHERE account_sid = :account AND day BETWEEN :first AND :last
            UNION ALL
            SELECT day, calls FROM calls_rollup_deltas WHERE account_sid = :account AND day BETWEEN :first AND :last
          ) c GROUP BY day),
feedback AS (SELECT day, sum(n) AS n FROM (
            SELECT day, score_1 + score_2 + score_3 + score_4 + score_5 AS n FROM daily_feedback
            WHERE account_sid = :account AND day BETWEEN :first AND :last
            UNION ALL
            SELECT day, (quality_score IS NOT NULL)::int - (old_quality_score IS NOT NULL)::int FROM feedback_rollup_deltas
            WHERE account_sid = :account AND day BETWEEN :first AND :last
          ) f GROUP BY day),
summaries AS (SELECT (date_created AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM feedback_summaries
              WHERE account_sid = :account AND date_created >= CAST(:first AS date) AT TIME ZONE 'UTC'
              GROUP BY 1)
SELECT days.day, coalesce(calls.n, 0) AS calls, coalesce(feedback.n, 0) AS feedback, coalesce(summaries.n, 0) AS summaries
FROM days LEFT JOIN calls USING (day) LEFT JOIN feedback USING (day) LEFT JOIN summaries USING (day)
ORDER BY days.day DESC""")


def account(sid: str, days: int = 30) -> dict | None:
    """One account: its calls, feedback and summaries per UTC day (the daily rollups and their pending
    deltas, exact), its subaccounts, and its last voice status callback."""
    with Session(get_engine()) as session:
        found = session.execute(
            select(Account.sid, Account.friendly_name, Account.parent_sid, AccountActivity.last_voice_status_at)
            .outerjoin(AccountActivity, AccountActivity.account_sid == Account.sid)
            .where(Account.sid == sid)).one_or_none()
        if found is None:
            return None
        last = dt.datetime.now(dt.timezone.utc).date()
        first = last - dt.timedelta(days=days - 1)
        rows = [dict(row._mapping) for row in session.execute(_ACCOUNT_DAYS, {"account": sid, "first": first,
                                                                                "last": last})]
        subaccounts = list(session.scalars(select(Account.sid).where(Account.parent_sid == sid)
                                           .order_by(Account.sid).limit(100)))
    return {**dict(found._mapping), "days": rows, "subaccounts": subaccounts}



# The overview's counts, each from an index and each of what stays small or recent: what is queued,
# running, pending or failed, all of it; what completed or was delivered, over the last day (the
# all-time totals grow with everything ever stored: `summaries status` counts them).
_OVERVIEW = text("""
SELECT
  (SELECT count(*) FROM feedback_summaries WHERE status = 'queued') AS queued,
  (SELECT count(*) FROM feedback_summaries WHERE status = 'in-progress') AS in_progress,
  (SELECT count(*) FROM feedback_summaries WHERE status = 'failed') AS failed,
  (SELECT count(*) FROM feedback_summaries WHERE status = 'completed' AND date_created >= now() - interval '24 hours')
    AS completed_24h,
  (SELECT min(date_updated) FROM feedback_summaries WHERE status = 'queued') AS oldest_queued,
  (SELECT count(*) FROM feedback_summaries WHERE status = 'in-progress' AND lease_expires_at < now()) AS expired_leases,
  (SELECT count(*) FROM callback_deliveries WHERE state = 'pending') AS pending,
  (SELECT min(next_attempt_at) FROM callback_deliveries WHERE state = 'pending') AS next_due,
  (SELECT count(*) FROM callback_deliveries WHERE state = 'pending' AND next_attempt_at < now() - interval '5 minutes')
    AS overdue,
  (SELECT count(*) FROM callback_deliveries WHERE state = 'failed') AS deliveries_failed,
  (SELECT count(*) FROM callback_deliveries WHERE state = 'delivered' AND date_updated >= now() - interval '24 hours')
    AS delivered_24h""")


def overview() -> dict:
    with Session(get_engine()) as session:
        return dict(session.execute(_OVERVIEW).one()._mapping)
