"""`summaries callbacks list|redeliver`: see deliveries and send an event again, by hand."""

from __future__ import annotations

import argparse
import datetime as dt
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.callbacks import deliveries
from shared.callbacks.state import DeliveryState
from shared.models import CallbackDelivery
from shared.platform.config import get_settings
from shared.platform.db import get_engine
from shared.safe_text import safe
from shared.summaries.events import operator


class SelectionError(ValueError):
    """Raised when a redelivery names nothing to send."""


def _row(delivery: CallbackDelivery) -> dict:
    return {"summary_sid": delivery.summary_sid, "state": delivery.state, "method": delivery.method,
            "url": delivery.url, "host": delivery.host, "attempts": delivery.attempts,
            "last_error": delivery.last_error, "next_attempt_at": delivery.next_attempt_at,
            "delivered_at": delivery.delivered_at, "redeliveries": delivery.redeliveries,
            "idempotency_token": delivery.idempotency_token, "date_updated": delivery.date_updated}


def list_deliveries(state: str | None, limit: int) -> list[dict]:
    query = select(CallbackDelivery).order_by(CallbackDelivery.date_updated.desc()).limit(limit)
    if state:
        query = query.where(CallbackDelivery.state == state)
    with Session(get_engine()) as session:
        return [_row(d) for d in session.scalars(query)]


def select_for_redelivery(session: Session, args: argparse.Namespace) -> list[CallbackDelivery]:
    query = (select(CallbackDelivery).where(CallbackDelivery.state != DeliveryState.PENDING.value)
             .order_by(CallbackDelivery.date_updated))
    if args.sids:
        query = query.where(CallbackDelivery.summary_sid.in_(args.sids))
    elif args.state:
        query = query.where(CallbackDelivery.state == args.state)
        if args.since:
            query = query.where(CallbackDelivery.date_updated >= args.since)
        if args.host:
            query = query.where(CallbackDelivery.host == args.host.lower())
    else:
        raise SelectionError("name summaries (FS...) or a --state to redeliver")
    return list(session.scalars(query))


def redeliver(args: argparse.Namespace, out=print) -> int:
    """Reset each chosen delivery to pending with a fresh budget of attempts and send it, at most
    args.rate per second; the event and its idempotency token stay the original ones."""
    budget, actor = get_settings().callback_max_attempts, operator()
    with Session(get_engine()) as session:
        chosen = select_for_redelivery(session, args)
        if args.sids:
            missing = set(args.sids) - {d.summary_sid for d in chosen}
            for sid in sorted(missing):
                out(f"{safe(sid)}: no finished delivery (none, or still pending)")
        for delivery in chosen:
            action = "would send" if args.dry_run else "sending"
            out(f"{delivery.summary_sid}: {action} {delivery.method} {safe(delivery.url)} ({delivery.state} after "
                f"{delivery.attempts} attempts; token {delivery.idempotency_token})")
            if args.dry_run:
                out("  " + safe("&".join(f"{k}={v}" for k, v in sorted(delivery.params.items()))))
                continue
            deliveries.redeliver(session, delivery, budget, actor)
            session.commit()  # sends it
            time.sleep(1 / args.rate)
    return len(chosen)


def parse_since(raw: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(raw)
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
