"""The console's actions (POST), each through shared/operator/actions.py as the CLI's are, recorded
with the console user's name as `console:NAME`. app.py has already checked the CSRF token and the
role; an action answers with a redirect to the page that shows its result (or, for a bulk
redelivery, a page that streams its progress)."""

from __future__ import annotations

import ipaddress
import threading
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from console import notices, sessions
from console.pages import purge_days
from console.queries import ACCOUNT_SID, STATES, Filters
from console.web import HttpError, Response, redirect, safe_next
from shared.operator import actions, users
from shared.platform.config import get_settings
from shared.platform.db import get_engine

DRY_RUN_ROWS = 20
MIN_RATE = 0.1  # a slower run would hold its thread for hours between two sends
BULK_MAX = 10_000  # deliveries one bulk redelivery sends; the page says when the selection holds more


def actor(request) -> str:
    return f"console:{request.user.name}"


def _back(request, location: str, message: str, **query: str) -> Response:
    return redirect(f"{location}?{urlencode({**query, 'done': notices.write(message, request.user.name)})}")


def retry(console, request, sid: str) -> Response:
    outcome = actions.retry([sid], actor(request))[sid]
    return _back(request, f"/summaries/{sid}", f"retry: {outcome}")


def redeliver_one(console, request, sid: str) -> Response:
    sent = actions.redeliver_one(sid, actor(request), get_settings())
    return _back(request, f"/summaries/{sid}", "callback sent again" if sent else "no finished delivery to send again")


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
    if not MIN_RATE <= rate <= cap:  # NaN fails too
        raise HttpError(400, f"rate is at least {MIN_RATE:g} and at most {cap:g} a second (CONSOLE_REDELIVERY_MAX_RATE)")
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
    try:
        address = str(ipaddress.ip_address(address))
    except ValueError:
        address = ""
    if not ACCOUNT_SID.fullmatch(account) or not address:
        raise HttpError(400, "Name the circuit's account (AC…) and address (an IP address).")
    closed = actions.close_circuit(account, address, actor(request), get_settings())
    return _back(request, "/destinations", f"circuit of {address} for {account} "
                                  + ("closed" if closed else "was already closed"))


def purge(console, request) -> Response:
    days = purge_days(request.form.get("days", ""))
    sids = actions.purgeable(days)
    if request.form.get("count", "") != str(len(sids)):
        # The count changed since the page showed it: show the new one instead of deleting more.
        return _back(request, "/purge", "nothing was deleted: the count changed since it was shown; here it is now",
                     days=format(days, ".10g"))
    deleted = actions.purge(sids, actor(request)) if sids else 0
    return _back(request, "/purge", f"deleted {deleted} failed summaries")


def sign_in(console, request) -> Response:
    name, password = request.form.get("name", "").strip(), request.form.get("password", "")
    with Session(get_engine()) as db:
        user, wait_s = users.sign_in(db, name, password, request.remote_addr, console.settings.console_sign_in_limit)
        db.commit()
    if user is None:
        message = (f"Too many failed sign-ins; try again in {max(1, round(wait_s / 60))} min." if wait_s
                   else "Wrong name or password.")
        return console.render(request, "sign_in.html", 429 if wait_s else 401, next=request.form.get("next", "/"),
                              failed=message)
    # A new session, and a new token: nothing from before the sign-in carries over.
    request.session = sessions.new_session(user.name, user.session_key)
    request.user = user
    return redirect(safe_next(request.form.get("next")))


def sign_out(console, request) -> Response:
    """Ends every session of the user (its cookies, wherever they are), not only this browser's."""
    if request.user is not None and request.session.user == request.user.name:
        with Session(get_engine()) as db:
            users.end_sessions(db, request.user.name)
            db.commit()
    request.session = sessions.new_session()
    request.user = None
    return redirect("/sign-in")
