"""What `summaries up --demo` adds so that every page of the console has something to show: summaries
in each status, a destination whose callbacks fail (its circuit open), a failed delivery whose
receiver answered with markup, a delivered one, an account whose voice status callbacks stopped, and
a demo operator whose password is new at each start (printed in the banner).

Written through the owners of each table, as the API and the workers would (shared/summaries/
lifecycle.py, shared/callbacks/deliveries.py, shared/operator/users.py); once per data directory,
but for the operator's password and the circuit (in Redis, which forgets it after its cooldown).
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from shared.accounts.sids import SUMMARY, new_sid
from shared.callbacks import deliveries
from shared.callbacks.circuit import CircuitBreaker
from shared.callbacks.state import DeliveryState
from shared.models import Account, FeedbackSummary
from shared.operator import users
from shared.platform.config import Settings
from shared.platform.db import autocommit
from shared.platform.queue import get_redis
from shared.summaries import lifecycle

DEMO_OPERATOR = "demo"
FAILING_HOST, FAILING_ADDRESS = "hooks.failing-customer.example", "203.0.113.7"
WORKING_HOST = "hooks.working-customer.example"
SILENT_DAYS = 3
OWNER = "demo-worker"


def demo_operator(engine: Engine) -> str:
    """The demo operator, with a new password (returned) at each start: nobody has the last one."""
    password = secrets.token_urlsafe(12)
    with Session(engine) as session:
        users.delete(session, DEMO_OPERATOR)
        users.create(session, DEMO_OPERATOR, "operator", password)
        session.commit()
    return password


def _summary(connection, account_sid: str, status: str, callback: str | None = None, reason: str = "") -> str:
    sid = new_sid(SUMMARY)
    today = dt.date.today()
    lifecycle.create(connection, sid, account_sid, f"RQdemo{secrets.token_hex(13)}", start_date=today - dt.timedelta(days=30),
                     end_date=today, include_subaccounts=False, status_callback=callback,
                     status_callback_method="POST")
    if status == "queued":
        return sid
    lifecycle.claim(connection, sid, OWNER, 300)
    if status == "completed":
        lifecycle.complete(connection, sid, OWNER, {
            "call_count": 0, "call_feedback_count": 0, "quality_score_average": None, "quality_score_median": None,
            "quality_score_standard_deviation": None, "issues": []})
    elif status == "failed":
        lifecycle.fail(connection, sid, OWNER, reason)
    return sid


def _attempts(engine: Engine, sid: str, settings: Settings, outcomes: list[tuple[str, int | None, str | None, str]]):
    """Attempts as a callback worker would record them; the last outcome decides the delivery's state."""
    with Session(engine) as session:
        summary = session.get(FeedbackSummary, sid)
        deliveries.add(session, summary, settings.callback_max_attempts)
        session.commit()
    with autocommit(engine) as connection:
        for number, (outcome, status_code, error, excerpt) in enumerate(outcomes, 1):
            claimed = deliveries.claim(connection, sid, 60)
            last = number == len(outcomes)
            target = {"delivered": DeliveryState.DELIVERED, "failed": DeliveryState.FAILED}.get(outcome) if last \
                else DeliveryState.PENDING
            deliveries.settle(connection, claimed, target or DeliveryState.PENDING,
                              deliveries.Attempt(outcome if last else "retry", status_code, error, 180, excerpt),
                              error or (f"HTTP {status_code}" if outcome != "delivered" else None), 0)


def add_demo_data(engine: Engine, demo: Account, sub: Account, settings: Settings) -> None:
    with engine.begin() as connection:
        for status in ("completed", "completed", "completed"):
            _summary(connection, demo.sid, status)
        _summary(connection, demo.sid, "failed", reason="the database cancelled the aggregate (statement timeout)")
        delivered = _summary(connection, demo.sid, "completed", f"https://{WORKING_HOST}/summaries")
        failing = _summary(connection, demo.sid, "completed", f"https://{FAILING_HOST}/twilio/feedback")
    _attempts(engine, delivered, settings, [("delivered", 200, None, "ok")])
    # The receiver answered with its own error page, markup and all: the console shows it as text.
    page = "<html><script>alert('from the receiver')</script><h1>502 Bad Gateway</h1></html>"
    _attempts(engine, failing, settings, [("retry", 502, None, page), ("retry", None, "connection timed out", ""),
                                          ("failed", 503, None, page)])
    with engine.begin() as connection:
        # The API writes these as Twilio's status callbacks arrive: the parent hears them, the subaccount's stopped.
        for sid, ago in ((demo.sid, dt.timedelta(minutes=4)), (sub.sid, dt.timedelta(days=SILENT_DAYS))):
            connection.execute(text("INSERT INTO account_activity (account_sid, last_voice_status_at) "
                                    "VALUES (:sid, now() - :ago) ON CONFLICT (account_sid) DO NOTHING"),
                               {"sid": sid, "ago": ago})


def open_demo_circuit(demo: Account, settings: Settings) -> None:
    breaker = CircuitBreaker(get_redis(), settings.callback_circuit_threshold, settings.callback_circuit_cooldown_s,
                             settings.callback_attempt_deadline_s)
    key = f"{demo.sid}:{FAILING_ADDRESS}"
    while not breaker.is_open(key):
        breaker.record_failure(key)


def subaccount(engine: Engine, demo: Account) -> Account:
    with Session(engine, expire_on_commit=False) as session:
        return session.scalar(select(Account).where(Account.parent_sid == demo.sid).order_by(Account.sid).limit(1))
