"""Twilio's request signature (X-Twilio-Signature): made on our status callbacks, checked on the voice
status callbacks Twilio sends us (SPEC, Status callback; Live data from Twilio)."""

from __future__ import annotations

import base64
import hashlib
import hmac


def signature(auth_token: str, url: str, post_params: dict[str, str] | None) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + name1 + value1 + ...)), names sorted; for GET
    the url already holds the query string and there are no POST parameters."""
    payload = url + "".join(name + post_params[name] for name in sorted(post_params or {}))
    digest = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _signed_payload(url: str, params: dict[str, list[str]]) -> str:
    # As Twilio (and its RequestValidator) build it: names sorted, each name's distinct values sorted.
    return url + "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))


def is_valid_signature(auth_token: str, urls: list[str], params: dict[str, list[str]], presented: str) -> bool:
    """Whether `presented` is Twilio's signature over one of `urls` (the URL Twilio requested, spelled
    with or without its default port) and the form parameters, keyed with auth_token."""
    given = presented.encode("latin-1", "replace")  # a WSGI header is latin-1 text; compare bytes
    found = False
    for url in urls:
        digest = hmac.new(auth_token.encode("utf-8"), _signed_payload(url, params).encode("utf-8"), hashlib.sha1)
        found |= hmac.compare_digest(base64.b64encode(digest.digest()), given)
    return found
