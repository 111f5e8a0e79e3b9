"""The console's pages (GET): each reads through shared/operator/views.py (what the CLI shows too) or
console/queries.py and console/charts.py (what only the console shows), and renders a template."""

from __future__ import annotations

import datetime as dt
import threading
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

from console import charts, queries
from console.queries import Filters
from console.web import HttpError, Response, safe_next
from shared.operator import actions, views
from shared.platform import heartbeat
from shared.platform.config import get_settings
from shared.platform.queue import get_redis


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, dt.datetime) else "-"


def _ago(seconds) -> str:
    if seconds is None:
        return "-"
    seconds = float(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _since(value) -> str:
    return "-" if value is None else _ago((dt.datetime.now(dt.timezone.utc) - value).total_seconds()) + " ago"


def _percent(value) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _number(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _url(value) -> str:
    """A URL as a viewer may see it: without the user and password a receiver may have put in it."""
    try:
        parts = urlsplit(str(value or ""))
        if "@" not in parts.netloc:
            return str(value or "")
        return urlunsplit(parts._replace(netloc="…@" + parts.netloc.rsplit("@", 1)[1]))
    except ValueError:
        return "(a URL that cannot be read)"


def _hour(value) -> str:
    return value.strftime("%Y-%m-%d %H:00") if isinstance(value, dt.datetime) else "-"


FILTERS = {"when": _when, "hour": _hour, "url": _url, "days": lambda value: format(value, ".10g"), "ago": _ago, "since": _since, "percent": _percent, "number": _number,
           "urlencode": lambda values: urlencode(values)}

# Which workers are alive, asked in the background every WORKERS_EVERY_S by one thread (a greenlet,
# under the console's gevent workers) per process: a ping waits out its whole timeout whoever answers,
# and no page waits for it. A page shows the last answer; the first ones after a start, "asking". The
# thread asks only while someone looks: it ends WORKERS_IDLE_S after the last overview, and the next
# starts it again (or at once, stop_asking_workers()).
WORKERS_EVERY_S, WORKERS_IDLE_S, PING_TIMEOUT_S = 10.0, 120.0, 1.0
_workers_seen: dict = {"value": None, "thread": None, "wanted_at": 0.0}
_workers_lock = threading.Lock()
_workers_stop = threading.Event()


def _ask_workers_while_wanted() -> None:
    while not _workers_stop.is_set() and time.monotonic() - _workers_seen["wanted_at"] < WORKERS_IDLE_S:
        try:
            _workers_seen["value"] = views.workers(PING_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - Redis down: shown as unknown; asked again next time
            _workers_seen["value"] = None
        _workers_stop.wait(WORKERS_EVERY_S)


def _workers():
    with _workers_lock:
        _workers_seen["wanted_at"] = time.monotonic()
        thread = _workers_seen["thread"]
        if thread is None or not thread.is_alive():
            _workers_stop.clear()
            _workers_seen["thread"] = threading.Thread(target=_ask_workers_while_wanted, name="console-workers",
                                                       daemon=True)
            _workers_seen["thread"].start()
    return _workers_seen["value"]


def stop_asking_workers() -> None:
    """End the background pings now (a test's console is done; its Redis is the next test's)."""
    _workers_stop.set()
    thread = _workers_seen["thread"]
    if thread is not None:
        thread.join(timeout=2 * PING_TIMEOUT_S + 1)
    _workers_seen.update(value=None, thread=None)


def _scheduler() -> dict:
    interval = get_settings().sweep_interval_s
    try:
        age = heartbeat.last_sweep_age_s(get_redis())
    except Exception:  # noqa: BLE001
        return {"alive": None, "age_s": None, "interval_s": interval}
    # alive: True, False (silent too long), or False with no age (never swept: just started, or never ran)
    return {"alive": age is not None and age < 3 * interval + 10, "age_s": age, "interval_s": interval}


def overview(console, request) -> Response:
    range_name = request.query.get("range", "24h")
    if range_name not in charts.RANGES:
        raise HttpError(400, "range is 24h or 7d")
    queues, redis_state = views.queues()
    return console.render(request, "overview.html", queues=queues, redis_state=redis_state,
                          counts=queries.overview(), workers=_workers() if queues is not None else None,
                          scheduler=_scheduler(),
                          charts=charts.charts(range_name), range_name=range_name, ranges=list(charts.RANGES),
                          refresh=request.query.get("refresh") == "1")


def _list(console, request, template: str, statuses: tuple[str, ...], lister, **extra) -> Response:
    filters = Filters.from_query(request.query, statuses)
    rows, next_cursor = lister(filters, request.query.get("before", ""))
    return console.render(request, template, rows=rows, filters=filters, statuses=statuses,
                          next_query={**filters.query(), "before": next_cursor} if next_cursor else None,
                          first_page=not request.query.get("before"), **extra)


def summaries(console, request) -> Response:
    return _list(console, request, "summaries.html", queries.STATUSES, queries.summaries)


def deliveries(console, request) -> Response:
    return _list(console, request, "deliveries.html", queries.STATES, queries.deliveries)


def summary(console, request, sid: str) -> Response:
    found = views.show(sid)
    if found is None:
        raise HttpError(404, f"There is no summary {sid}.")
    return console.render(request, "summary.html", summary=found)


def destinations(console, request) -> Response:
    rows = charts.destinations(24)[:200]
    details = queries.destination_details([row["host"] for row in rows])
    circuits, circuits_problem = queries.circuits(get_settings().callback_circuit_threshold)
    return console.render(request, "destinations.html", rows=rows, details=details, circuits=circuits,
                          circuits_problem=circuits_problem)


def accounts(console, request) -> Response:
    rows, next_cursor = queries.accounts(request.query.get("before", ""))
    return console.render(request, "accounts.html", rows=rows, next_cursor=next_cursor)


def account(console, request, sid: str) -> Response:
    found = queries.account(sid)
    if found is None:
        raise HttpError(404, f"There is no account {sid}.")
    return console.render(request, "account.html", account=found)


MIN_DAYS, MAX_DAYS = 0.01, 36_500


def purge_days(raw: str) -> float:
    """A purge's age in days, as the page and the action both read it."""
    try:
        days = float(raw)
    except ValueError:
        raise HttpError(400, "days must be a number") from None
    if not MIN_DAYS <= days <= MAX_DAYS:  # NaN fails too
        raise HttpError(400, f"days is at least {MIN_DAYS:g} and at most {MAX_DAYS:,}")
    return days


def purge(console, request) -> Response:
    raw = request.query.get("days", "").strip()
    days = purge_days(raw) if raw else None
    count = actions.count_purgeable(days) if days is not None else None
    return console.render(request, "purge.html", days=days, count=count)


def sign_in(console, request) -> Response:
    if request.user is not None:
        return Response(303, b"", headers=[("Location", safe_next(request.query.get("next")))])
    return console.render(request, "sign_in.html", next=request.query.get("next", "/"), failed=None)
