"""Twilio wire formats: dates, decimals and booleans as the official library reads and writes them."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal
from email.utils import format_datetime

FOUR_PLACES = Decimal("0.0001")
TWO_PLACES = Decimal("0.01")


# Every date this service takes or stores: a day's end (+ 1 day) must still be a date, and
# PostgreSQL cannot store a timestamp past year 9999 (23:30 -01:00 on 9999-12-31 is year 10000 in UTC).
EARLIEST_DATE, LATEST_DATE = dt.date(1970, 1, 1), dt.date(9999, 12, 30)
_EARLIEST, _LATEST = (dt.datetime.combine(day, dt.time(), dt.timezone.utc) for day in (EARLIEST_DATE, LATEST_DATE))


def storable(moment: dt.datetime) -> bool:
    """Whether an aware datetime lies within EARLIEST_DATE .. LATEST_DATE (in UTC)."""
    try:
        return _EARLIEST <= moment <= _LATEST
    except OverflowError:
        return False


def rfc2822(moment: dt.datetime | None) -> str | None:
    """`Tue, 31 Aug 2010 20:36:28 +0000`, always in UTC."""
    if moment is None:
        return None
    return format_datetime(moment.astimezone(dt.timezone.utc).replace(microsecond=0))


def iso_date(day: dt.date | None) -> str | None:
    return day.isoformat() if day is not None else None


def round4(value: Decimal | float | None) -> Decimal | None:
    if value is None:
        return None
    return Decimal(value).quantize(FOUR_PLACES, rounding=ROUND_HALF_EVEN)


def percentage(count: int, total: int) -> str:
    """`"0.44%"`: 100 * count / total, half-even to 2 places, always printed with 2 places."""
    if total == 0:
        return "0.00%"
    value = (Decimal(100) * count / Decimal(total)).quantize(TWO_PLACES, rounding=ROUND_HALF_EVEN)
    return f"{value}%"


def parse_bool(raw: str) -> bool | None:
    """Twilio booleans: `true`/`false` in any case (the Python library sends `True`/`False`)."""
    return {"true": True, "false": False}.get(raw.strip().lower())
