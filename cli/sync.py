"""`summaries calls sync`: an account's calls backfilled from Twilio's Calls API.

The calls come from `GET /2010-04-01/Accounts/{AccountSid}/Calls.json`, read through the official
`twilio` library from TWILIO_API_BASE_URL, with the account's stored credentials (or an API key).
Twilio is authoritative for its own calls: each one it lists in the window is inserted if absent and
otherwise takes Twilio's account and start time, confirming a provisional call (load_calls in
cli/imports.py, the CSV import's loading path, in its 'twilio' mode). Calls are stored in batches,
each committed on its own: an error from Twilio keeps what was committed, and running the command
again writes only what is still missing or different.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Iterable, Iterator, TextIO

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from cli.commands import CommandError
from cli.imports import ImportFailed, load_calls
from shared.accounts.sids import CALL, is_sid
from shared.models import Account
from shared.platform.config import SettingError, Settings, get_settings
from shared.platform.db import get_engine

BATCH_CALLS = 10_000  # calls per committed batch, unless --batch-size says otherwise
PAGE_SIZE = 1000  # the largest page Twilio serves
TIMEOUT_S = 60.0  # per request: the library's default is no timeout at all, a hang on a silent server
PROGRESS_INTERVAL_S = 0.2
UTC = dt.timezone.utc
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
SKIP_REASONS = ("never dialed", "outside the window", "under other accounts", "with a malformed SID")


def parse_day(raw: str, option: str) -> dt.date:
    """YYYY-MM-DD exactly (date.fromisoformat alone would also take 20240102 or 2024-W01-2)."""
    try:
        if _DAY.fullmatch(raw):
            return dt.date.fromisoformat(raw)
    except ValueError:
        pass
    raise CommandError(f"{option} {raw[:40]!r} is not a date (YYYY-MM-DD)")


def window(since: str, until: str | None, today: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[since 00:00 UTC, the day after until 00:00 UTC): --until includes its whole day."""
    first = parse_day(since, "--since")
    last = parse_day(until, "--until") if until is not None else today
    if last < first:
        raise CommandError(f"--until {last} is before --since {first}")
    midnight = dt.time(tzinfo=UTC)
    return dt.datetime.combine(first, midnight), dt.datetime.combine(last + dt.timedelta(days=1), midnight)


@dataclass
class Tally:
    read: int = 0
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason (one of SKIP_REASONS) -> calls
    foreign: Counter = field(default_factory=Counter)  # account SID, neither ours nor our subaccount -> calls

    @property
    def stored(self) -> int:
        return self.inserted + self.changed

    @property
    def committed(self) -> int:
        return self.inserted + self.changed + self.unchanged

    def summary(self, account_sid: str) -> str:
        reasons = []
        for reason in SKIP_REASONS:
            count = self.skipped[reason]
            if not count:
                continue
            if reason == "under other accounts":
                named = ", ".join(f"{sid} ({n})" for sid, n in self.foreign.most_common(3))
                more = len(self.foreign) - 3
                reason += f": {named}" + (f" and {more} more" if more > 0 else "")
            reasons.append(f"{count} {reason}")
        return (f"{_calls(self.read)} read from Twilio for {account_sid}: {self.stored} stored ({self.inserted} new, "
                f"{self.changed} changed), {self.unchanged} already there unchanged, "
                f"{sum(self.skipped.values())} skipped" + (f" ({'; '.join(reasons)})" if reasons else ""))


class Progress:
    """One line on stderr rewritten in place while stderr is a terminal; nothing otherwise."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.live = stream.isatty()
        self.shown_at: float | None = None

    def show(self, tally: Tally, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if force or self.shown_at is None or now - self.shown_at >= PROGRESS_INTERVAL_S:
            self.stream.write(f"\r\033[K{tally.read} calls read, {tally.stored} stored")
            self.stream.flush()
            self.shown_at = now

    def close(self) -> None:
        if self.live and self.shown_at is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


def twilio_client(settings: Settings, account: Account) -> Client:
    key, secret = settings.twilio_api_key, settings.twilio_api_secret
    if bool(key) != bool(secret):
        raise CommandError("TWILIO_API_KEY and TWILIO_API_SECRET go together: set both, or neither to use the "
                           "account's auth token")
    http = TwilioHttpClient(timeout=TIMEOUT_S)
    if key:
        client = Client(key, secret, account.sid, http_client=http)
    else:
        client = Client(account.sid, account.auth_token, http_client=http)
    # The library would rewrite the host for TWILIO_EDGE/TWILIO_REGION found in the environment:
    # TWILIO_API_BASE_URL alone says where the calls are read.
    client.edge = client.region = None
    client.api.base_url = settings.twilio_api_base_url
    return client


def _accepted(calls: Iterable, family: set[str], start: dt.datetime, end: dt.datetime, tally: Tally,
              progress: Progress) -> Iterator[tuple[int, str, str, dt.datetime]]:
    """The calls to store, as load_calls takes them (their rank in Twilio's list as the line); the
    others counted in the tally by why they are skipped."""
    for call in calls:
        tally.read += 1
        progress.show(tally)
        # twilio 8.13 parses start_time with email.utils.parsedate, which ignores the offset: right for
        # Twilio, which always sends +0000; an unparseable value comes back as None, like a null one.
        when = call.start_time
        if when is None:  # never dialed: queued, or canceled before it was
            tally.skipped["never dialed"] += 1
        elif not start <= when < end:  # more than was asked for
            tally.skipped["outside the window"] += 1
        elif call.account_sid not in family:
            tally.skipped["under other accounts"] += 1
            tally.foreign[str(call.account_sid)] += 1
        elif not is_sid(call.sid or "", CALL):  # COPY takes SIDs unescaped: only well-formed ones
            tally.skipped["with a malformed SID"] += 1
        else:
            yield tally.read, call.sid, call.account_sid, when


def _calls(count: int) -> str:
    return f"{count} call" + ("" if count == 1 else "s")


def _one_line(text: object, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def _answered(status: int, message: object, code: object) -> str:
    return f"Twilio answered {status}: {_one_line(message) or 'no message'}" + (f" (code {code})" if code else "")


def _from_response(response: Response) -> str:
    try:
        body = json.loads(response.text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return _answered(response.status_code, body.get("message"), body.get("code"))
    return _answered(response.status_code, response.text, None)


def _unreachable(base_url: str, error: requests.RequestException) -> str:
    if isinstance(error, requests.Timeout):
        reason = f"no answer within {TIMEOUT_S:g} s"
    else:
        found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))
        reason = found.group(0) if found else _one_line(error) or type(error).__name__
    return f"cannot reach Twilio at {base_url}: {reason}"


def sync(account_sid: str, since: str, until: str | None, batch_size: int | None = None,
         progress_stream: TextIO = sys.stderr) -> str:
    """Backfill the account's calls that started in the window; returns the one-line account of it."""
    start, end = window(since, until, dt.datetime.now(UTC).date())
    batch_size = BATCH_CALLS if batch_size is None else batch_size
    if batch_size < 1:
        raise CommandError("--batch-size must be 1 or more")
    try:
        settings = get_settings()
    except SettingError as error:
        raise CommandError(error) from None
    engine = get_engine()
    with Session(engine) as session:
        account = session.get(Account, account_sid)
        if account is None:
            raise CommandError(f"account {account_sid} does not exist")
        family = {account.sid, *session.scalars(select(Account.sid).where(Account.parent_sid == account.sid))}
        client = twilio_client(settings, account)
    tally, progress = Tally(), Progress(progress_stream)
    try:
        progress.show(tally, force=True)
        # Twilio's StartTime< is inclusive (the library's key for the query's `StartTime<=`), and its
        # times have whole seconds: the last second of --until is the last one asked for.
        calls = client.api.v2010.accounts(account.sid).calls.stream(
            start_time_after=start, start_time_before=end - dt.timedelta(seconds=1), page_size=PAGE_SIZE)
        rows = _accepted(calls, family, start, end, tally, progress)
        # Each batch is read from Twilio first, outside any transaction, then stored and committed.
        while batch := list(islice(rows, batch_size)):
            with engine.begin() as connection:
                loaded = load_calls(connection, batch, "twilio")
            tally.inserted += loaded.inserted
            tally.changed += loaded.changed
            tally.unchanged += loaded.unchanged
            progress.show(tally, force=True)
    except TwilioRestException as error:
        raise _stopped(_answered(error.status, error.msg, error.code), tally) from None
    except TwilioException as error:
        # A list page that is not a 200 raises a plain TwilioException("Unable to fetch page",
        # response), not a TwilioRestException (twilio/base/page.py).
        response = next((arg for arg in error.args if isinstance(arg, Response)), None)
        what = _from_response(response) if response is not None else f"twilio library: {_one_line(error)}"
        raise _stopped(what, tally) from None
    except requests.RequestException as error:
        raise _stopped(_unreachable(settings.twilio_api_base_url, error), tally) from None
    except json.JSONDecodeError:
        raise _stopped("Twilio answered something that is not JSON", tally) from None
    except ImportFailed as error:  # the account was deleted meanwhile
        raise _stopped(str(error), tally) from None
    except KeyboardInterrupt:
        raise _stopped("interrupted", tally) from None
    finally:
        progress.close()
    return tally.summary(account.sid)


def _stopped(what: str, tally: Tally) -> CommandError:
    if not tally.committed:
        return CommandError(f"{what}; nothing was stored")
    return CommandError(f"{what}; stopped after {_calls(tally.read)} read: the {tally.committed} calls of the batches "
                        f"already committed stay ({tally.stored} of them new or changed), and running the same "
                        "command again resumes")
