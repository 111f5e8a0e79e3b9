"""`summaries calls sync`: an account's calls backfilled from Twilio's Calls API.

The calls come from `GET /2010-04-01/Accounts/{AccountSid}/Calls.json` on TWILIO_API_BASE_URL, asked
through the official `twilio` library's client with the account's stored credentials (or an API key).
Twilio is authoritative for its own calls: each one it lists in the window is inserted if absent and
otherwise takes Twilio's account and start time, confirming a provisional call (load_calls in
cli/imports.py, the CSV import's loading path, in its 'twilio' mode). Calls are stored in batches,
each committed on its own: an error from Twilio keeps what was committed, and running the command
again writes only what is still missing or different.

The pages are followed and read here, not by the library, which trusts whatever answers: it would
send the credentials to any host a page links to, follow a list that loops or never ends, wait on
an answer that drips a byte at a time, and end in a traceback on a page of other JSON types. Here a
page is checked whole before any of its calls is used, and the run stops, in one line, at a link
off TWILIO_API_BASE_URL's origin (not asked for: no credentials go there), at a link back to a page
already read, after --max-pages pages, at a page not read whole within --page-timeout, and at a
page that is not a Calls page.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from itertools import islice
from typing import Iterable, Iterator, NamedTuple, TextIO
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests
import urllib3
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from cli.imports import load_calls
from shared.accounts.sids import CALL, is_sid
from shared.errors import CommandError, ImportFailed, SettingError
from shared.models import Account
from shared.platform.config import Settings, get_settings
from shared.platform.db import get_engine

BATCH_CALLS = 10_000  # calls per committed batch, unless --batch-size says otherwise
PAGE_SIZE = 1000  # the largest page Twilio serves
# Per run, unless --max-pages says otherwise: ten million calls, and the end of a list that never ends.
MAX_PAGES = 10_000
# One page all told (connect, headers, body), unless --page-timeout says otherwise: the library's
# default is no timeout at all, and a timeout per read lets a byte every few seconds go on for ever.
PAGE_TIMEOUT_S = 60.0
MAX_PAGE_BYTES = 32 * 2**20  # a page of 1000 calls is about 2 MB
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


class Stopped(Exception):
    """The one line that ends a run in which Twilio's answers cannot be taken further."""

    def __init__(self, what: str, resumable: bool = True):
        super().__init__(what)
        self.resumable = resumable  # whether the same command, run again, can get further


class _Refused(Exception):
    """A page the HTTP client would not ask for or read whole; says what of it, the page's number aside."""


class _Expired(BaseException):
    """Raised by the alarm at a page's deadline. A BaseException, as KeyboardInterrupt is: no `except
    Exception` in requests or urllib3 on the way takes it for an error of theirs."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Whatever blocks inside (connect, the headers, the body) is interrupted when `seconds` have passed.
    worker/ssrf.py's Deadline does this for callbacks with a watchdog thread, as a worker has many
    threads; cli/ may not import worker/ (tests/test_layout.py), and a command runs in the main
    thread, where an alarm signal reaches it."""
    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


class PageClient(TwilioHttpClient):
    """The library's HTTP client, for Twilio's list pages: a request goes to TWILIO_API_BASE_URL's
    origin or nowhere (the credentials go with every request), redirects are not followed, and an
    answer is read whole, at most MAX_PAGE_BYTES of it, within the page timeout."""

    def __init__(self, base_url: str, timeout_s: float):
        super().__init__(timeout=timeout_s)
        self.base_url, self.origin = base_url, _origin(base_url)

    def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False) -> Response:
        try:
            prepared = self.session.prepare_request(
                requests.Request(method, url, params=params, data=data, headers=headers, auth=auth))
            # Checked as requests parsed it to connect: the link as written can read otherwise
            # (http://elsewhere\@twilio/ is twilio's to urlsplit, elsewhere's to urllib3).
            elsewhere = _origin(prepared.url) != self.origin
        except (requests.RequestException, ValueError):
            raise _Refused(f"is at {_link(url)}, which is not a URL") from None
        if elsewhere:
            raise _Refused(f"is at {_link(url)}, not on {self.base_url}: not asked for, and no credentials "
                           "were sent there")
        settings = self.session.merge_environment_settings(prepared.url, {}, True, None, None)
        response = None
        try:
            with _deadline(self.timeout):
                response = self.session.send(prepared, allow_redirects=False, timeout=self.timeout, **settings)
                body = response.raw.read(MAX_PAGE_BYTES + 1, decode_content=True)
        except _Expired:
            raise _Refused(f"was not read whole within {self.timeout:g} s (--page-timeout)") from None
        except requests.RequestException:  # an OSError too, and said as it is
            raise
        except (urllib3.exceptions.HTTPError, OSError) as error:  # the body, read past requests: cut short
            raise requests.ConnectionError(error) from None
        finally:
            if response is not None:
                response.close()
        if len(body) > MAX_PAGE_BYTES:
            raise _Refused(f"is over {MAX_PAGE_BYTES // 2**20} MB")
        return Response(response.status_code, body.decode("utf-8", "replace"), response.headers)


def twilio_client(settings: Settings, account: Account, page_timeout_s: float) -> Client:
    key, secret = settings.twilio_api_key, settings.twilio_api_secret
    if bool(key) != bool(secret):
        raise CommandError("TWILIO_API_KEY and TWILIO_API_SECRET go together: set both, or neither to use the "
                           "account's auth token")
    http = PageClient(settings.twilio_api_base_url, page_timeout_s)
    if key:
        client = Client(key, secret, account.sid, http_client=http)
    else:
        client = Client(account.sid, account.auth_token, http_client=http)
    # The library would rewrite the host for TWILIO_EDGE/TWILIO_REGION found in the environment:
    # TWILIO_API_BASE_URL alone says where the calls are read.
    client.edge = client.region = None
    return client


class Listed(NamedTuple):
    sid: str
    account_sid: str
    start_time: dt.datetime | None  # None: never dialed


class _Malformed(Exception):
    """Says what of a page is not as Twilio's Calls list has it, by its JSON path (calls[6].sid)."""


def _kind(value: object) -> str:
    if value is None:
        return "null"
    kinds = ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "an array"),
             (dict, "an object"))
    return next(name for types, name in kinds if isinstance(value, types))


def _string(parent: dict, name: str, path: str, nullable: bool = False) -> str | None:
    if name not in parent:
        raise _Malformed(f"{path} is missing")
    value = parent[name]
    if not isinstance(value, str) and not (nullable and value is None):
        raise _Malformed(f"{path} is {_kind(value)}, not a string")
    return value


def _call(record: object, path: str) -> Listed:
    if not isinstance(record, dict):
        raise _Malformed(f"{path} is {_kind(record)}, not an object")
    raw = _string(record, "start_time", f"{path}.start_time", nullable=True)
    when = None
    if raw is not None:
        try:
            when = parsedate_to_datetime(raw)
        except (ValueError, OverflowError):  # not RFC 2822, or a 32nd day or a 25th hour
            raise _Malformed(f"{path}.start_time {raw[:40]!r} is not a time") from None
        if when.tzinfo is None:  # -0000: RFC 2822's UTC of unknown origin
            when = when.replace(tzinfo=UTC)
    return Listed(_string(record, "sid", f"{path}.sid"), _string(record, "account_sid", f"{path}.account_sid"), when)


def _page(text: str) -> tuple[list[Listed], str | None]:
    """A page's calls and its link to the next one, where the library finds them (`meta.key` and
    `meta.next_page_url` when a newer list has them, `calls` and `next_page_uri` otherwise), or
    _Malformed naming the first thing that is not as a Calls page has it."""
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: thousands of nested arrays
        raise _Malformed(f"not JSON ({_one_line(error, 80)})") from None
    if not isinstance(payload, dict):
        raise _Malformed(f"the body is {_kind(payload)}, not an object")
    meta = payload.get("meta", {})
    if not isinstance(meta, dict):
        raise _Malformed(f"meta is {_kind(meta)}, not an object")
    key = _string(meta, "key", "meta.key") if "key" in meta else "calls"
    records = payload.get(key)
    if not isinstance(records, list):
        raise _Malformed(f"{key} is {_kind(records)}, not an array" if key in payload else f"{key} is missing")
    if "next_page_url" in meta:
        link = _string(meta, "next_page_url", "meta.next_page_url", nullable=True)
    else:
        link = _string(payload, "next_page_uri", "next_page_uri", nullable=True) if "next_page_uri" in payload else None
    return [_call(record, f"{key}[{i}]") for i, record in enumerate(records)], link or None


def _page_key(url: str) -> tuple:
    """One page, however its link spells the query's order or escapes."""
    parts = urlsplit(url)
    return (parts.scheme, parts.netloc.lower(), parts.path,
            tuple(sorted(parse_qsl(parts.query, keep_blank_values=True))))


def _listed(client: Client, base_url: str, account_sid: str, start: dt.datetime, end: dt.datetime,
            max_pages: int) -> Iterator[Listed]:
    """Twilio's calls in the window, page after page. A page is taken whole or not at all, and the run
    stops (Stopped) at a page that is not a 200 or not a Calls page, at a link off TWILIO_API_BASE_URL's
    origin or back to a page already read, at a page too slow or too large, and after max_pages."""
    # Twilio's StartTime< is inclusive (the library's key for the query's `StartTime<=`), and its
    # times have whole seconds: the last second of --until is the last one asked for.
    last = end - dt.timedelta(seconds=1)
    query = urlencode({"StartTime>": f"{start:%Y-%m-%dT%H:%M:%SZ}", "StartTime<": f"{last:%Y-%m-%dT%H:%M:%SZ}",
                       "PageSize": PAGE_SIZE})
    url = f"{base_url}/2010-04-01/Accounts/{account_sid}/Calls.json?{query}"
    read: dict[tuple, int] = {}  # page -> its number in this run
    number = 1
    while True:
        read[_page_key(url)] = number
        try:
            response = client.request("GET", url)
        except _Refused as refused:
            raise Stopped(f"Twilio's page {number} {refused}") from None
        if response.status_code != 200:
            raise Stopped(_from_response(response))
        try:
            calls, link = _page(response.text)
        except _Malformed as malformed:
            raise Stopped(f"Twilio's page {number} is malformed: {malformed}") from None
        yield from calls
        if link is None:
            return
        if number == max_pages:
            raise Stopped(f"Twilio's page {number} links to another: stopped at --max-pages {max_pages} "
                          f"({_calls(number * PAGE_SIZE)} at most); a narrower window (--since, --until) or a higher "
                          "--max-pages reads the rest", resumable=False)
        try:
            url = urljoin(base_url, link)  # a path (Twilio's next_page_uri) is on TWILIO_API_BASE_URL
            seen_as = read.get(_page_key(url))
        except ValueError:  # urlsplit: a port or an IPv6 address that is not one
            raise Stopped(f"Twilio's page {number + 1} is at {_link(link)}, which is not a URL") from None
        if seen_as is not None:
            raise Stopped(f"Twilio's page {number} links back to page {seen_as} ({_link(url)}): the list loops, "
                          "not followed")
        number += 1


def _accepted(calls: Iterable[Listed], family: set[str], start: dt.datetime, end: dt.datetime, tally: Tally,
              progress: Progress) -> Iterator[tuple[int, str, str, dt.datetime]]:
    """The calls to store, as load_calls takes them (their rank in Twilio's list as the line); the
    others counted in the tally by why they are skipped."""
    for call in calls:
        tally.read += 1
        progress.show(tally)
        when = call.start_time
        if when is None:  # never dialed: queued, or canceled before it was
            tally.skipped["never dialed"] += 1
        elif not start <= when < end:  # more than was asked for
            tally.skipped["outside the window"] += 1
        elif call.account_sid not in family:
            tally.skipped["under other accounts"] += 1
            tally.foreign[call.account_sid] += 1
        elif not is_sid(call.sid, CALL):  # COPY takes SIDs unescaped: only well-formed ones
            tally.skipped["with a malformed SID"] += 1
        else:
            yield tally.read, call.sid, call.account_sid, when


def _calls(count: int) -> str:
    return f"{count} call" + ("" if count == 1 else "s")


def _one_line(text: object, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


def _link(url: str) -> str:
    """A link as Twilio gave it (a page's is about 250 characters), cut where a hostile one could go on."""
    shown = " ".join(url.split())
    return shown if len(shown) <= 1000 else shown[:1000] + "..."


def _answered(status: int, message: object, code: object) -> str:
    return f"Twilio answered {status}: {_one_line(message) or 'no message'}" + (f" (code {code})" if code else "")


def _from_response(response: Response) -> str:
    try:
        body = json.loads(response.text)
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        return _answered(response.status_code, body.get("message"), body.get("code"))
    return _answered(response.status_code, response.text, None)


def _unreachable(base_url: str, error: requests.RequestException, timeout_s: float) -> str:
    if isinstance(error, requests.Timeout):
        reason = f"no answer within {timeout_s:g} s"
    else:
        found = re.search(r"\[Errno -?\d+\] [^'\")]+", str(error))
        reason = found.group(0) if found else _one_line(error) or type(error).__name__
    return f"cannot reach Twilio at {base_url}: {reason}"


def sync(account_sid: str, since: str, until: str | None, batch_size: int | None = None,
         max_pages: int | None = None, page_timeout_s: float | None = None,
         progress_stream: TextIO = sys.stderr) -> str:
    """Backfill the account's calls that started in the window; returns the one-line account of it."""
    start, end = window(since, until, dt.datetime.now(UTC).date())
    batch_size = BATCH_CALLS if batch_size is None else batch_size
    max_pages = MAX_PAGES if max_pages is None else max_pages
    page_timeout_s = PAGE_TIMEOUT_S if page_timeout_s is None else page_timeout_s
    if batch_size < 1:
        raise CommandError("--batch-size must be 1 or more")
    if max_pages < 1:
        raise CommandError("--max-pages must be 1 or more")
    if not (math.isfinite(page_timeout_s) and 0 < page_timeout_s <= 86400):
        raise CommandError("--page-timeout must be seconds, more than 0 and at most a day")
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
        client = twilio_client(settings, account, page_timeout_s)
    tally, progress = Tally(), Progress(progress_stream)
    try:
        progress.show(tally, force=True)
        calls = _listed(client, settings.twilio_api_base_url, account.sid, start, end, max_pages)
        rows = _accepted(calls, family, start, end, tally, progress)
        # Each batch is read from Twilio first, outside any transaction, then stored and committed.
        while batch := list(islice(rows, batch_size)):
            with engine.begin() as connection:
                loaded = load_calls(connection, batch, "twilio")
            tally.inserted += loaded.inserted
            tally.changed += loaded.changed
            tally.unchanged += loaded.unchanged
            progress.show(tally, force=True)
    except Stopped as error:
        raise _stopped(str(error), tally, error.resumable) from None
    except requests.RequestException as error:
        raise _stopped(_unreachable(settings.twilio_api_base_url, error, page_timeout_s), tally) from None
    except ImportFailed as error:  # the account was deleted meanwhile
        raise _stopped(str(error), tally) from None
    except KeyboardInterrupt:
        raise _stopped("interrupted", tally) from None
    finally:
        progress.close()
    return tally.summary(account.sid)


def _stopped(what: str, tally: Tally, resumable: bool = True) -> CommandError:
    if not tally.committed:
        return CommandError(f"{what}; nothing was stored")
    return CommandError(f"{what}; stopped after {_calls(tally.read)} read: the {tally.committed} calls of the batches "
                        f"already committed stay ({tally.stored} of them new or changed)"
                        + (", and running the same command again resumes" if resumable else ""))
