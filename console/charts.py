"""The overview's charts, hour by hour: summaries created, completed and failed; create-to-complete
time (p50, p95) of the summaries completed in the hour; callback attempts by outcome, in all and per
destination host (the destinations page).

From the tables the system keeps (summary_events, callback_attempts), read by time through 0014's
indexes. An hour that is over is computed once and kept (its numbers no longer change: later events
land in later hours): the charts' few metrics in console_chart_hours, each host's attempts in
console_host_hours (the destinations page's alone: the overview never reads them). A 7-day chart
reads about 1,500 small rows and computes only the current hour; hours missing from a cache are
computed and kept a day at a time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from shared.platform.db import get_engine

HOUR = dt.timedelta(hours=1)
SETTLE = dt.timedelta(minutes=2)  # an hour is cached once it ended this long ago (late commits)
RANGES = {"24h": 24, "7d": 7 * 24}
COMPUTED = "computed"  # the marker row of a cached hour, so an hour with nothing in it is cached too
OUTCOMES = ("delivered", "retry", "failed")

_EVENTS = text("""
SELECT date_trunc('hour', at) AS hour, 'summaries.' || kind AS metric, count(*)::float AS value
FROM summary_events WHERE at >= :start AND at < :end AND kind IN ('created', 'completed', 'failed')
GROUP BY 1, 2""")
_DURATIONS = text("""
SELECT date_trunc('hour', e.at) AS hour,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM e.at - s.date_created)) AS p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM e.at - s.date_created)) AS p95
FROM summary_events e JOIN feedback_summaries s ON s.sid = e.summary_sid
WHERE e.at >= :start AND e.at < :end AND e.kind = 'completed'
GROUP BY 1""")
# By outcome from the attempts' index alone; by host (the destinations page) with each attempt's delivery.
_OUTCOMES = text("""
SELECT date_trunc('hour', attempted_at) AS hour, 'callbacks.' || outcome AS metric, count(*)::float AS value
FROM callback_attempts WHERE attempted_at >= :start AND attempted_at < :end GROUP BY 1, 2""")
_HOSTS = text("""
SELECT date_trunc('hour', a.attempted_at) AS hour, d.host,
       count(*) FILTER (WHERE a.outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE a.outcome = 'retry') AS retry,
       count(*) FILTER (WHERE a.outcome = 'failed') AS failed
FROM callback_attempts a JOIN callback_deliveries d ON d.summary_sid = a.summary_sid
WHERE a.attempted_at >= :start AND a.attempted_at < :end
GROUP BY 1, 2""")
_CACHED = text("SELECT hour, metric, value FROM console_chart_hours WHERE hour >= :start AND hour < :end")
_CACHED_HOSTS = text("SELECT hour, host, delivered, retry, failed FROM console_host_hours "
                     "WHERE hour >= :start AND hour < :end")
_KEEP = text("INSERT INTO console_chart_hours (hour, metric, value) SELECT * FROM unnest(CAST(:hours AS timestamptz[]), "
             "CAST(:metrics AS text[]), CAST(:values AS float8[])) ON CONFLICT DO NOTHING")
_KEEP_HOSTS = text("INSERT INTO console_host_hours (hour, host, delivered, retry, failed) SELECT * FROM unnest("
                   "CAST(:hours AS timestamptz[]), CAST(:hosts AS text[]), CAST(:delivered AS int[]), "
                   "CAST(:retry AS int[]), CAST(:failed AS int[])) ON CONFLICT DO NOTHING")
COMPUTE_SPAN = dt.timedelta(days=1)  # missing hours are computed (and kept) a day at a time


class _Kind:
    """What one cache holds, and how it computes and keeps an hour: the charts' global metrics, or each
    destination host's attempts by outcome."""

    def __init__(self, cached, compute, keep):
        self.cached, self.compute, self.keep = cached, compute, keep


def _global(session: Session, start: dt.datetime, end: dt.datetime) -> dict[dt.datetime, dict[str, float]]:
    hours: dict[dt.datetime, dict[str, float]] = {}
    for statement in (_EVENTS, _OUTCOMES):
        for row in session.execute(statement, {"start": start, "end": end}):
            hours.setdefault(row.hour, {})[row.metric] = row.value
    for row in session.execute(_DURATIONS, {"start": start, "end": end}):
        hours.setdefault(row.hour, {}).update({"duration.p50": row.p50, "duration.p95": row.p95})
    return hours


def _hosts(session: Session, start: dt.datetime, end: dt.datetime) -> dict[dt.datetime, dict[str, tuple]]:
    hours: dict[dt.datetime, dict[str, tuple]] = {}
    for row in session.execute(_HOSTS, {"start": start, "end": end}):
        hours.setdefault(row.hour, {})[row.host] = (row.delivered, row.retry, row.failed)
    return hours


def _keep_global(session: Session, hour: dt.datetime, metrics: dict[str, float]) -> None:
    rows = [(COMPUTED, None), *metrics.items()]
    session.execute(_KEEP, {"hours": [hour] * len(rows), "metrics": [m for m, _ in rows], "values": [v for _, v in rows]})


def _keep_hosts(session: Session, hour: dt.datetime, hosts: dict[str, tuple]) -> None:
    rows = [("", (0, 0, 0)), *hosts.items()]  # "": the marker of a computed hour
    session.execute(_KEEP_HOSTS, {"hours": [hour] * len(rows), "hosts": [h for h, _ in rows],
                                  "delivered": [c[0] for _, c in rows], "retry": [c[1] for _, c in rows],
                                  "failed": [c[2] for _, c in rows]})


def _read_global(session: Session, start, end):
    found, cached = {}, set()
    for row in session.execute(_CACHED, {"start": start, "end": end}):
        if row.metric == COMPUTED:
            cached.add(row.hour)
        elif row.value is not None:
            found.setdefault(row.hour, {})[row.metric] = row.value
    return found, cached


def _read_hosts(session: Session, start, end):
    found, cached = {}, set()
    for row in session.execute(_CACHED_HOSTS, {"start": start, "end": end}):
        if row.host == "":
            cached.add(row.hour)
        else:
            found.setdefault(row.hour, {})[row.host] = (row.delivered, row.retry, row.failed)
    return found, cached


GLOBAL = _Kind(_read_global, _global, _keep_global)
HOSTS = _Kind(_read_hosts, _hosts, _keep_hosts)


def hourly(hours: int, now: dt.datetime | None = None, kind: _Kind = GLOBAL) -> list[tuple[dt.datetime, dict]]:
    """The last `hours` hours, oldest first, each with its figures (GLOBAL: metric -> value, absent
    meaning zero or nothing measured; HOSTS: host -> (delivered, retry, failed))."""
    now = now or dt.datetime.now(dt.timezone.utc)
    current = now.replace(minute=0, second=0, microsecond=0)
    first = current - (hours - 1) * HOUR
    settled_end = (now - SETTLE).replace(minute=0, second=0, microsecond=0)  # hours before it are cached
    with Session(get_engine()) as session:
        found, cached = kind.cached(session, first, settled_end)
        missing = [first + n * HOUR for n in range(hours)
                   if first + n * HOUR < settled_end and first + n * HOUR not in cached]
        while missing:  # a day at a time, each kept at once: a long gap never makes one long statement
            span = [hour for hour in missing if hour < missing[0] + COMPUTE_SPAN]
            computed = kind.compute(session, span[0], span[-1] + HOUR)
            for hour in span:
                found[hour] = computed.get(hour, {})
                kind.keep(session, hour, found[hour])
            session.commit()
            missing = missing[len(span):]
        if settled_end <= current:
            found.update(kind.compute(session, settled_end, current + HOUR))
    return [(first + n * HOUR, found.get(first + n * HOUR, {})) for n in range(hours)]


@dataclass(frozen=True)
class Series:
    name: str
    css: str  # the class that colours it (console.css)
    values: list[float | None]


@dataclass(frozen=True)
class Chart:
    """What a template draws as SVG: a polyline per series, scaled to the largest value."""

    title: str
    unit: str
    series: list[Series]
    labels: list[str]
    width: int = 640
    height: int = 160

    @property
    def top(self) -> float:
        peak = max((v for s in self.series for v in s.values if v is not None), default=0)
        return peak or 1

    def _xy(self, n: int, value: float) -> tuple[float, float]:
        count = max(len(self.labels) - 1, 1)
        return round(n * self.width / count, 1), round(self.height - (value / self.top) * self.height, 1)

    def segments(self, series: Series) -> list[str]:
        """The polyline points of each run of hours with a value: an hour without one (no summary
        completed, so no time measured) breaks the line instead of being bridged."""
        runs, run = [], []
        for n, value in enumerate(series.values):
            if value is None:
                runs, run = (runs + [run] if run else runs), []
            else:
                run.append(self._xy(n, value))
        runs += [run] if run else []
        return [" ".join(f"{x},{y}" for x, y in points) for points in runs if len(points) > 1]

    def dots(self, series: Series) -> list[tuple[float, float]]:
        """The hours with a value and no neighbour with one: a line of one point draws nothing."""
        values = series.values
        return [self._xy(n, v) for n, v in enumerate(values) if v is not None
                and (n == 0 or values[n - 1] is None) and (n == len(values) - 1 or values[n + 1] is None)]

    def total(self, series: Series) -> float:
        return sum(v for v in series.values if v is not None)


def charts(range_name: str) -> list[Chart]:
    hours = hourly(RANGES[range_name])
    labels = [hour.strftime("%d %H:00") for hour, _ in hours]

    def series(metric: str, name: str, css: str, empty: float | None = 0.0) -> Series:
        return Series(name, css, [metrics.get(metric, empty) for _, metrics in hours])

    return [
        Chart("Summaries", "per hour", [series("summaries.created", "created", "s-created"),
                                        series("summaries.completed", "completed", "s-completed"),
                                        series("summaries.failed", "failed", "s-failed")], labels),
        Chart("Create to complete", "seconds", [series("duration.p50", "p50", "s-p50", None),
                                                series("duration.p95", "p95", "s-p95", None)], labels),
        Chart("Callback attempts", "per hour", [series(f"callbacks.{o}", o, f"s-{o}") for o in OUTCOMES], labels),
    ]


def destinations(hours: int = 24) -> list[dict]:
    """Per destination host over the last `hours`: attempts by outcome and the success rate, and
    since when it fails (the first hour with failures after its last hour with a delivery)."""
    table: dict[str, dict] = {}
    last_ok: dict[str, dt.datetime] = {}
    counted = hourly(hours, kind=HOSTS)
    for hour, hosts in counted:
        for host, (delivered, retry, failed) in hosts.items():
            entry = table.setdefault(host, {"host": host, "delivered": 0, "retry": 0, "failed": 0,
                                            "failing_since": None})
            entry["delivered"] += delivered
            entry["retry"] += retry
            entry["failed"] += failed
            if delivered:
                last_ok[host] = hour
    for hour, hosts in counted:
        for host, (delivered, retry, failed) in hosts.items():
            entry = table[host]
            if (retry or failed) and entry["failing_since"] is None and (host not in last_ok or hour > last_ok[host]):
                entry["failing_since"] = hour
    for entry in table.values():
        entry["attempts"] = entry["delivered"] + entry["retry"] + entry["failed"]
        entry["success_rate"] = entry["delivered"] / entry["attempts"] if entry["attempts"] else None
    return sorted(table.values(), key=lambda e: (e["success_rate"] if e["success_rate"] is not None else 1,
                                                 -e["attempts"]))
