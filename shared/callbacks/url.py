"""A StatusCallback URL: checked at create by the same parser the sender uses (requests'), so a URL
the API accepts is one the worker can request; and the URL a callback goes to, as on the wire.

A fragment is refused at create: it is never sent, so a signature over it could not be checked
by any receiver (and a GET's parameters appended after it would never arrive).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import requests
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

MAX_CHARS = 2048


def problem(url: str) -> str | None:
    """Why `url` cannot be a StatusCallback, or None when it can."""
    if len(url) > MAX_CHARS:
        return f"StatusCallback must be at most {MAX_CHARS} characters"
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "StatusCallback must be an absolute http or https URL"
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed port or IPv6 literal
        valid = False
    if not valid:
        return "StatusCallback must be an absolute http or https URL"
    if "#" in url:
        return "StatusCallback must not have a fragment (#...): it is never sent, so it cannot be signed"
    try:
        # What the sender will do: requests prepares (IDNA, wildcards), urllib3 parses, the socket encodes.
        host = parse_url(requests.Request("POST", url).prepare().url).host or ""
        if not host.startswith("["):
            host.encode("idna")  # as the socket layer will: a label over 63 characters fails here
    except (requests.RequestException, LocationParseError, ValueError, UnicodeError) as error:
        return f"StatusCallback cannot be requested: {str(error)[:100]}"
    return None


def request_target(url: str, method: str, params: dict[str, str]) -> tuple[str, dict[str, str] | None]:
    """The URL to request and the form body: GET carries the parameters in the query string, after
    any the URL has (a URL that ends in `?` gets no second one). A fragment is dropped: it never
    goes on the wire, so neither may it be signed."""
    url = url.split("#", 1)[0]
    if method == "GET":
        separator = "" if url.endswith(("?", "&")) else ("&" if urlsplit(url).query else "?")
        return url + separator + urlencode(params), None
    return url, params
