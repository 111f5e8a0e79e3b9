"""The console's actions (POST), each through shared/operator/actions.py as the CLI's are, recorded
with the console user's name as `console:NAME`. app.py has already checked the CSRF token and the
role; an action answers with a redirect to the page that shows its result (or, for a bulk
redelivery, a page that streams its progress)."""

from __future__ import annotations

import threading
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from console import notices, sessions
from console.queries import STATES, Filters
from console.web import HttpError, Response, redirect, safe_next
from shared.operator import actions
from shared.platform.config import get_settings
from shared.platform.db import get_engine

DRY_RUN_ROWS = 20
BULK_MAX = 10_000  # deliveries one bulk redelivery sends; the page says when the selection holds more


def actor(request) -> str:
    return f"console:{request.user.name}"


def _back(location: str, message: str) -> Response:
    return redirect(f"{location}?{urlencode({'done': notices.write(message)})}")


def retry(console, request, sid: str) -> Response:
    outcome = actions.retry([sid], actor(request))[sid]
    return _back(f"/summaries/{sid}", f"retry: {outcome}")


def redeliver_one(console, request, sid: str) -> Response:
    sent = actions.redeliver_one(sid, actor(request), get_settings())
    return _back(f"/summaries/{sid}", "callback sent again" if sent else "no finished delivery to send again")


def _selection(form: dict[str, str]) -> tuple[Filters, actions.RedeliverySelection]:
    filters = Filters.from_query(form, STATES)
    if filters.status not in ("delivered", "failed"):
        raise HttpError(400, "Choose the deliveries to send again by state: failed or delivered.")
    if filters.sid:
        raise HttpError(400, "A bulk redelivery selects by state, host, account and time; to send one "
                             "summary's callback again, use the button on its page.")
    selection = actions.RedeliverySelection(state=filters.status, since=filters.since, until=filters.until,
                                            host=filters.host or None, account=filters.account or None)
    return filters, selection


def _rate(form: dict[str, str]) -> float:
    cap = get_settings().console_redelivery_max_rate
    try:
        rate = float(form.get("rate") or cap)
    except ValueError:
        raise HttpError(400, "rate must be a number") from None
    if not 0 < rate <= cap:
        raise HttpError(400, f"rate is more than 0 and at most {cap:g} a second (CONSOLE_REDELIVERY_MAX_RATE)")
    return rate


def _dry_run(console, request, filters, selection, rate: float, changed_from: int | None = None) -> Response:
    total = actions.count_redelivery(selection)
    plan = actions.plan_redelivery(selection, limit=DRY_RUN_ROWS)
    return console.render(request, "redeliver_plan.html", filters=filters, total=total, first=plan.deliveries,
                          sending=min(total, BULK_MAX), limit=BULK_MAX, rate=rate, changed_from=changed_from,
                          cap=get_settings().console_redelivery_max_rate)


def redeliver_plan(console, request) -> Response:
    """The dry run: how many the filter selects and the first of them; nothing is sent."""
    filters, selection = _selection(request.form)
    return _dry_run(console, request, filters, selection, _rate(request.form))


def redeliver_send(console, request) -> Response:
    """Send at the rate asked (at most the cap), streaming a line per delivery. Closing the page stops
    it after the delivery in hand: what was sent stays sent, the rest is left as it was. The dry run's
    count binds: when the selection holds another number now, the dry run is shown again instead."""
    filters, selection = _selection(request.form)
    rate = _rate(request.form)
    plan = actions.plan_redelivery(selection, limit=BULK_MAX)
    if request.form.get("expected") != str(len(plan.deliveries)):
        expected = request.form.get("expected", "")
        return _dry_run(console, request, filters, selection, rate,
                        changed_from=int(expected) if expected.isdigit() else -1)
    stop = threading.Event()
    steps = actions.redeliver(plan, actor(request), get_settings(), rate_per_s=rate, stop=stop)
    return console.stream(request, "redeliver_progress.html", filters=filters, total=len(plan.deliveries),
                          steps=steps, rate=rate)


def close_circuit(console, request) -> Response:
    account, address = request.form.get("account", ""), request.form.get("address", "")
    if not account.startswith("AC") or not address or len(address) > 64:
        raise HttpError(400, "Name the circuit's account and address.")
    closed = actions.close_circuit(account, address, actor(request), get_settings())
    return _back("/destinations", f"circuit of {address} for {account} "
                                  + ("closed" if closed else "was already closed"))


def purge(console, request) -> Response:
    try:
        days = float(request.form.get("days", ""))
    except ValueError:
        raise HttpError(400, "days must be a number") from None
    if not 0 < days < 100_000:
        raise HttpError(400, "days must be more than 0")
    sids = actions.purgeable(days)
    expected = request.form.get("count", "")
    if expected != str(len(sids)):
        # The count changed since the page showed it: show the new one instead of deleting more.
        return redirect(f"/purge?{urlencode({'days': f'{days:g}'})}")
    deleted = actions.purge(sids, actor(request)) if sids else 0
    return _back("/purge", f"deleted {deleted} failed summaries")


def sign_in(console, request) -> Response:
    name, password = request.form.get("name", "").strip(), request.form.get("password", "")
    with Session(get_engine()) as db:
        user, wait_s = sessions.sign_in(db, name, password, request.remote_addr, console.settings)
        db.commit()
    if user is None:
        message = (f"Too many failed sign-ins; try again in {max(1, round(wait_s / 60))} min." if wait_s
                   else "Wrong name or password.")
        return console.render(request, "sign_in.html", 429 if wait_s else 401, next=request.form.get("next", "/"),
                              failed=message)
    request.session = sessions.new_session(user.name)  # a new token too: nothing from before sign-in carries over
    request.user = user
    return redirect(safe_next(request.form.get("next")))


def sign_out(console, request) -> Response:
    request.session = sessions.new_session()
    request.user = None
    return redirect("/sign-in")
