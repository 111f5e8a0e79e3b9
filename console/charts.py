"""The overview's charts, hour by hour: summaries created, completed and failed; create-to-complete
time (p50, p95) of the summaries completed in the hour; callback attempts by outcome, in all and per
destination host (the destinations page).

From the tables the system keeps (summary_events, callback_attempts), read by time through 0014's
indexes. An hour that is over is computed once and kept in console_chart_hours (its numbers no longer
change: later events land in later hours), so a 7-day chart reads 168 small rows and computes only
the current hour; every hour missing from the cache is computed in one pass over its span.
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
_ATTEMPTS = text("""
SELECT date_trunc('hour', a.attempted_at) AS hour, a.outcome, d.host, count(*)::float AS value
FROM callback_attempts a JOIN callback_deliveries d ON d.summary_sid = a.summary_sid
WHERE a.attempted_at >= :start AND a.attempted_at < :end
GROUP BY 1, 2, 3""")
_CACHED = text("SELECT hour, metric, value FROM console_chart_hours WHERE hour >= :start AND hour < :end")
_KEEP = text("INSERT INTO console_chart_hours (hour, metric, value) VALUES (:hour, :metric, :value) "
             "ON CONFLICT DO NOTHING")


def _compute(session: Session, start: dt.datetime, end: dt.datetime) -> dict[dt.datetime, dict[str, float]]:
    hours: dict[dt.datetime, dict[str, float]] = {}

    def put(hour, metric, value):
        hours.setdefault(hour, {})[metric] = value

    for row in session.execute(_EVENTS, {"start": start, "end": end}):
        put(row.hour, row.metric, row.value)
    for row in session.execute(_DURATIONS, {"start": start, "end": end}):
        put(row.hour, "duration.p50", row.p50)
        put(row.hour, "duration.p95", row.p95)
    for row in session.execute(_ATTEMPTS, {"start": start, "end": end}):
        metrics = hours.setdefault(row.hour, {})
        metrics[f"callbacks.{row.outcome}"] = metrics.get(f"callbacks.{row.outcome}", 0) + row.value
        metrics[f"host.{row.outcome}:{row.host}"] = row.value
    return hours


def hourly(hours: int, now: dt.datetime | None = None) -> list[tuple[dt.datetime, dict[str, float]]]:
    """The last `hours` hours, oldest first, each with its metrics (absent: zero, or no time measured)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    current = now.replace(minute=0, second=0, microsecond=0)
    first = current - (hours - 1) * HOUR
    settled_end = (now - SETTLE).replace(minute=0, second=0, microsecond=0)  # hours before it are cached
    found: dict[dt.datetime, dict[str, float]] = {}
    with Session(get_engine()) as session:
        cached = set()
        for row in session.execute(_CACHED, {"start": first, "end": settled_end}):
            if row.metric == COMPUTED:
                cached.add(row.hour)
            elif row.value is not None:
                found.setdefault(row.hour, {})[row.metric] = row.value
        missing = [first + n * HOUR for n in range(hours) if first + n * HOUR < settled_end
                   and first + n * HOUR not in cached]
        if missing:
            computed = _compute(session, missing[0], missing[-1] + HOUR)
            for hour in missing:
                metrics = computed.get(hour, {})
                found[hour] = metrics
                session.execute(_KEEP, [{"hour": hour, "metric": COMPUTED, "value": None},
                                        *({"hour": hour, "metric": m, "value": v} for m, v in metrics.items())])
            session.commit()
        if settled_end <= current:
            found.update(_compute(session, settled_end, current + HOUR))
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
    whether it is failing now (its latest hours with attempts have failures and no delivery)."""
    table: dict[str, dict] = {}
    counted = hourly(hours)
    for hour, metrics in counted:
        for metric, value in metrics.items():
            if not metric.startswith("host."):
                continue
            outcome, _, host = metric[len("host."):].partition(":")
            entry = table.setdefault(host, {"host": host, **{o: 0 for o in OUTCOMES}, "failing_since": None,
                                            "_last_ok": None})
            entry[outcome] += value
            if outcome == "delivered" and value:
                entry["_last_ok"] = hour
    for entry in table.values():
        attempts = sum(entry[o] for o in OUTCOMES)
        entry["attempts"] = attempts
        entry["success_rate"] = entry["delivered"] / attempts if attempts else None
    for hour, metrics in counted:
        for entry in table.values():
            failed = metrics.get(f"host.failed:{entry['host']}", 0) + metrics.get(f"host.retry:{entry['host']}", 0)
            if failed and entry["failing_since"] is None and (entry["_last_ok"] is None or hour > entry["_last_ok"]):
                entry["failing_since"] = hour
    rows = sorted(table.values(), key=lambda e: (e["success_rate"] if e["success_rate"] is not None else 1,
                                                 -e["attempts"]))
    for entry in rows:
        del entry["_last_ok"]
    return rows
