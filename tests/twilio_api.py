"""Twilio's Calls list on a loopback port, for `summaries calls sync`: the official library reads it as
it reads api.twilio.com.

`GET /2010-04-01/Accounts/{AccountSid}/Calls.json` with HTTP Basic auth (the account's SID and auth
token, or an API key's SID and secret), filtered on `StartTime>` and `StartTime<` (the keys of the
query's `StartTime>=` and `StartTime<=`: inclusive, as at Twilio), newest first, in pages of
`PageSize` (50 by default, at most 1000) chained by `next_page_uri` and a `PageToken` cursor. Errors
come in Twilio's JSON format. Calls not yet dialed (no start_time) are listed by their date_created:
the stand-in's choice, which lets the tests see the client skip them.

It can also be a hostile or broken Twilio: `tamper` rewrites each page before it is served (a link
to another host, a loop, a list without end, any malformed body), `drip_s` sends every answer a
byte at a time, and a second instance on 127.0.0.2 is another host, which records any request that
reaches it. After `limit` requests every answer is a 503, so that a client that would never stop
fails its test at once instead of hanging it.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
from email.utils import format_datetime
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from shared.accounts.sids import CALL, new_sid
from tests.receiver import QuietHandler, serve

UTC = dt.timezone.utc
_PATH = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-f]{32})/Calls\.json")
MAX_PAGE_SIZE = 1000


def rfc2822(when: dt.datetime | None) -> str | None:
    return format_datetime(when.astimezone(UTC)) if when is not None else None  # Tue, 31 Aug 2010 20:36:28 +0000


def _error(status: int, code: int, message: str) -> tuple[int, dict]:
    return status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                    "status": status}


def _query_time(raw: str) -> dt.datetime:
    """The library sends %Y-%m-%dT%H:%M:%SZ; Twilio's documentation shows YYYY-MM-DD (midnight)."""
    if len(raw) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(raw), dt.time(tzinfo=UTC))
    return dt.datetime.strptime(raw, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


class TwilioCallsApi:
    def __init__(self, host: str = "127.0.0.1"):
        self.tokens: dict[str, str] = {}  # account SID -> auth token
        self.keys: dict[str, tuple[str, str]] = {}  # API key SID -> (secret, account SID)
        self.calls: dict[str, list[dict]] = {}  # account SID -> the calls its list shows
        self.fail_page: tuple[int, int] | None = None  # (page number, status): that page fails
        self.requests: list[dict] = []  # every request: user (Basic), path, query
        # (page number, the page as it would be served) -> what is served instead: an object or an
        # array as JSON, bytes as they are.
        self.tamper: Callable[[int, dict], object] | None = None
        self.drip_s = 0.0  # > 0: the whole answer, status line first, one byte at a time this far apart
        self.limit = 50  # requests answered before every answer is a 503
        self._lock = threading.Lock()
        api = self

        class Handler(QuietHandler):
            def do_GET(self):
                status, body = api._answer(self.path, self.headers.get("Authorization", ""))
                payload = body if isinstance(body, bytes) else json.dumps(body).encode()
                answer = (f"{self.protocol_version} {status} {self.responses[status][0]}\r\n"
                          "Content-Type: application/json\r\n"
                          f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload
                try:
                    if not api.drip_s:
                        self.wfile.write(answer)
                        return
                    self.close_connection = True
                    for i in range(len(answer)):
                        self.wfile.write(answer[i:i + 1])
                        self.wfile.flush()
                        time.sleep(api.drip_s)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up

        self.server, self.base_url = serve(Handler, host)

    def add_account(self, sid: str, token: str) -> None:
        self.tokens[sid] = token
        self.calls.setdefault(sid, [])

    def add_key(self, key: str, secret: str, account_sid: str) -> None:
        self.keys[key] = (secret, account_sid)

    def add_call(self, listed_under: str, start: dt.datetime | None, account_sid: str | None = None,
                 created: dt.datetime | None = None, sid: str | None = None) -> dict:
        """A call in `listed_under`'s list (its account_sid that one unless given); start None: not dialed."""
        sid = sid or new_sid(CALL)
        account_sid = account_sid or listed_under
        created = created or (start - dt.timedelta(seconds=2) if start else None)
        duration = None if start is None else 30 + int(start.timestamp()) % 600
        call = {
            "sid": sid, "account_sid": account_sid, "parent_call_sid": None,
            "date_created": rfc2822(created), "date_updated": rfc2822(created),
            "to": "+15558675310", "to_formatted": "(555) 867-5310", "from": "+15017122661",
            "from_formatted": "(501) 712-2661", "phone_number_sid": "PN" + "0" * 32,
            "status": "completed" if start else "queued",
            "start_time": rfc2822(start),
            "end_time": rfc2822(start + dt.timedelta(seconds=duration)) if start else None,
            "duration": str(duration) if start else None, "price": "-0.02000" if start else None, "price_unit": "USD",
            "direction": "outbound-api", "answered_by": None, "api_version": "2010-04-01", "forwarded_from": None,
            "group_sid": None, "caller_name": None, "queue_time": "0", "trunk_sid": None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}.json",
            "subresource_uris": {name: f"/2010-04-01/Accounts/{account_sid}/Calls/{sid}/{name.title()}.json"
                                 for name in ("notifications", "recordings", "events")},
            # The stand-in's own keys, removed before a call is served.
            "_at": start or created,
        }
        self.calls.setdefault(listed_under, []).append(call)
        return call

    def requests_seen(self) -> list[dict]:
        with self._lock:
            return list(self.requests)

    def _authenticated(self, header: str) -> tuple[str | None, str | None]:
        """(the Basic user, the account it authenticates) or (user, None)."""
        try:
            scheme, encoded = header.split(" ", 1)
            user, secret = base64.b64decode(encoded).decode().split(":", 1)
        except ValueError:
            return None, None
        if scheme != "Basic":
            return None, None
        if self.tokens.get(user) == secret:
            return user, user
        key = self.keys.get(user)
        return user, (key[1] if key and key[0] == secret else None)

    def _answer(self, raw_path: str, authorization: str) -> tuple[int, object]:
        parts = urlsplit(raw_path)
        query = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        user, account = self._authenticated(authorization)
        with self._lock:
            self.requests.append({"user": user, "path": parts.path, "query": query})
            if len(self.requests) > self.limit:
                return _error(503, 20500, f"the stand-in's limit of {self.limit} requests: the client does not stop")
        if account is None:
            return _error(401, 20003, "Authenticate")
        matched = _PATH.fullmatch(parts.path)
        if not matched or matched.group(1) != account:
            return _error(404, 20404, f"The requested resource {parts.path} was not found")
        try:
            after = _query_time(query["StartTime>"]) if "StartTime>" in query else None
            before = _query_time(query["StartTime<"]) if "StartTime<" in query else None
            size = min(int(query.get("PageSize", 50)), MAX_PAGE_SIZE)
            page = int(query.get("Page", 0))
        except ValueError as error:
            return _error(400, 20001, f"Invalid parameter: {error}")
        if self.fail_page and self.fail_page[0] == page:
            return _error(self.fail_page[1], 20500, "An internal server error has occurred")
        listed = sorted((call for call in self.calls.get(account, [])
                         if (after is None or call["_at"] >= after) and (before is None or call["_at"] <= before)),
                        key=lambda call: (call["_at"], call["sid"]), reverse=True)
        offset = 0
        token = query.get("PageToken", "")
        if token:  # PA + the SID of the last call served: the next page starts after it
            offset = next((i + 1 for i, call in enumerate(listed) if call["sid"] == token[2:]), len(listed))
        served = listed[offset:offset + size]
        filters = {name: query[name] for name in ("StartTime>", "StartTime<") if name in query}
        base = parts.path + "?" + urlencode({**filters, "PageSize": size})
        next_uri = None
        if offset + size < len(listed):
            next_uri = f"{base}&{urlencode({'Page': page + 1, 'PageToken': 'PA' + served[-1]['sid']})}"
        body = {
            "calls": [{k: v for k, v in call.items() if not k.startswith("_")} for call in served],
            "first_page_uri": f"{base}&Page=0", "next_page_uri": next_uri, "previous_page_uri": None,
            "page": page, "page_size": size, "start": offset, "end": offset + len(served) - 1,
            "uri": parts.path + ("?" + parts.query if parts.query else ""),
        }
        return 200, (self.tamper(page, body) if self.tamper else body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
