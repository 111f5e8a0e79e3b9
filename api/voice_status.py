"""POST /twilio/voice/status: Twilio's call status callbacks, the live source of the calls that
summaries count (SPEC, Live data from Twilio).

Give Twilio this URL as a call's or a number's `StatusCallback`, with the events `initiated` and
`completed` (or any of `initiated ringing answered completed`; each records the call once). A
request counts only when `X-Twilio-Signature` is Twilio's signature keyed with the auth token of
its `AccountSid`; anything else is a 403 that stores nothing. A valid one costs one statement (and
a lookup of the account's tokens first, the first time a process sees the account or after its
tokens changed; and, once a minute per account, a note of its arrival for the console), and enqueues
nothing.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Integer, column, text

from api.errors import Forbidden
from api.http import Request, Response
from shared.accounts.secrets import decrypt
from shared.accounts.sids import ACCOUNT, CALL, is_sid
from shared.formats import storable
from shared.models import Account
from shared.signing import is_valid_signature

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
# The first event (or Twilio's retry of any) inserts the call; later ones may only move its start
# earlier. A provisional call (known from a feedback post, shared/migrations 0006) is confirmed by an
# event of its own account; and moved to the sender only where the SPEC's parent-path case needs it:
# the parent posted, under its own path, feedback on a call that is its subaccount's. That feedback
# (and the annotation) moves with the call, carried by the move's own trigger (0013), which sees
# whatever was committed before the move, a post that raced it included.
# Any other account's event (a sibling, a subaccount for its parent's call, an unrelated account)
# takes nothing at once: a signature proves only that the sender holds its own token, not that
# Twilio sent it. Such a call stays the poster's provisional call, claimed by the sender (below),
# until the poster's own event confirms it, `summaries calls sync` (Twilio's own record) settles it,
# or PROVISIONAL_CALL_GRACE_S ends it and it goes to the claimant (shared/calls/provisional.py).
# The sender's parent, read once (the CTE `sender`) however many of the CASEs below ask for it. IS NOT
# DISTINCT FROM: a sender without a parent gives NULL, which must read as false, not unknown.
_SENDER = "sender AS (SELECT parent_sid FROM accounts WHERE sid = :account)"
_MOVES = """c.provisional AND (c.account_sid = excluded.account_sid
        OR c.account_sid IS NOT DISTINCT FROM (SELECT parent_sid FROM sender))"""
_EARLIER = "NOT c.provisional AND c.account_sid = excluded.account_sid AND excluded.start_time < c.start_time"
# Another account's event on a call the poster holds as provisional takes nothing now, but is kept as
# a claim (the first one): if nothing confirms the call for the poster within its grace, it goes to
# the claimant (shared/calls/provisional.py), so a post under the wrong account, or a stranger's on a
# call SID it learnt, cannot make the call's owner lose it.
_CLAIMS = "c.provisional AND c.claimed_by IS NULL AND NOT (" + _MOVES + ")"
_UPSERT = f"""INSERT INTO calls AS c (sid, account_sid, start_time) VALUES (:sid, :account, :start)
ON CONFLICT (sid) DO UPDATE SET
    account_sid = CASE WHEN {_MOVES} THEN excluded.account_sid ELSE c.account_sid END,
    start_time = CASE WHEN {_MOVES} OR {_EARLIER} THEN excluded.start_time ELSE c.start_time END,
    claimed_by = CASE WHEN {_MOVES} THEN NULL WHEN {_CLAIMS} THEN excluded.account_sid ELSE c.claimed_by END,
    claimed_start_time = CASE WHEN {_MOVES} THEN NULL WHEN {_CLAIMS} THEN excluded.start_time
                              ELSE c.claimed_start_time END,
    provisional = CASE WHEN {_MOVES} THEN false ELSE c.provisional END
WHERE ({_MOVES}) OR ({_EARLIER}) OR ({_CLAIMS})
"""
RECORD_CALL = text(f"WITH {_SENDER}\n{_UPSERT}")
# The same, made only while the token that signed the request is still one of the account's
# (compared by ciphertext: a rotated token has a new one), in one statement; the count says whether
# it was. Lets a process check signatures with the tokens it read for an earlier request of the
# account without reading them again, and still never record an event signed with a token the
# account no longer has (which the lookup-then-insert of before did not guarantee either).
RECORD_CALL_IF_SIGNED = text(
    "WITH signer AS (SELECT 1 FROM accounts WHERE sid = :account"
    " AND (auth_token_encrypted = :ciphertext OR secondary_token_encrypted = :ciphertext)),\n"
    f"{_SENDER},\n"
    "recorded AS (" + _UPSERT.replace("VALUES (:sid, :account, :start)", "SELECT :sid, :account, :start FROM signer")
    + "RETURNING 1)\n"
    "SELECT count(*) FROM signer").columns(column("count", Integer))
assert "FROM signer\nON CONFLICT" in RECORD_CALL_IF_SIGNED.element.text
TOKENS = text("SELECT auth_token_encrypted, secondary_token_encrypted FROM accounts WHERE sid = :sid").columns(
    Account.__table__.c.auth_token_encrypted, Account.__table__.c.secondary_token_encrypted)


def requested_urls(request: Request, public_base_url: str | None) -> list[str]:
    """The URL Twilio requested, as it may have signed it: with and without the default port."""
    environ = request.environ
    if public_base_url:
        base = urlsplit(public_base_url)
        scheme, netloc = base.scheme, base.netloc
    else:
        scheme = environ.get("wsgi.url_scheme", "http")
        netloc = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return list(_spellings(scheme, netloc, path, environ.get("QUERY_STRING", "")))


@functools.lru_cache(maxsize=256)
def _spellings(scheme: str, netloc: str, path: str, query: str) -> tuple[str, ...]:
    # The same few URLs on every request (one host, one path): worked out once per process.
    url = urlunsplit((scheme, netloc, path, query, ""))
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or DEFAULT_PORTS.get(scheme)
    except ValueError:  # a malformed Host header: no URL Twilio could have signed
        return ()
    host = f"[{host}]" if ":" in host else host
    return tuple(dict.fromkeys([url, parts._replace(netloc=host).geturl(),
                                parts._replace(netloc=f"{host}:{port}").geturl()]))


# Per process: an account's token ciphertexts as last read, for the next of its status callbacks.
# Only a shortcut: a request is recorded only if its token is still the account's (above).
_known_tokens: dict[str, tuple[str, str | None]] = {}
MAX_KNOWN_ACCOUNTS = 10_000


def _read_tokens(request: Request, account_sid: str) -> tuple[str, str | None] | None:
    found = request.connection.execute(TOKENS, {"sid": account_sid}).first()
    if found is None:
        _known_tokens.pop(account_sid, None)
        return None
    if len(_known_tokens) >= MAX_KNOWN_ACCOUNTS:
        _known_tokens.pop(next(iter(_known_tokens)))
    _known_tokens[account_sid] = tokens = (found[0], found[1])
    return tokens


def _signer(tokens: tuple[str, str | None], request: Request, urls: list[str], presented: str) -> str | None:
    """The ciphertext of the token that signed the request: the primary, else the secondary
    (decrypted only if the primary did not sign); None if neither did."""
    for ciphertext in tokens:
        if ciphertext and is_valid_signature(decrypt(ciphertext), urls, request.form, presented):
            return ciphertext
    return None


def _start_time(request: Request) -> dt.datetime:
    """The event's Timestamp, or for a `completed` event Timestamp - CallDuration: when the call
    began. Twilio always sends a readable Timestamp; one that is not (or lies outside 1970..9999,
    which no call does) is taken as the time the event reached us."""
    arrived = dt.datetime.now(dt.timezone.utc)
    try:
        moment = parsedate_to_datetime(request.param("Timestamp") or "")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        duration = (request.param("CallDuration") or "").strip()
        if request.param("CallStatus") == "completed" and duration.isascii() and duration.isdigit():
            moment -= dt.timedelta(seconds=int(duration[:9]))
    except (TypeError, ValueError, IndexError, OverflowError):
        return arrived
    return moment if storable(moment) else arrived


# When each account's last status callback arrived, for the console (its accounts page): written at
# most once a minute per account by each process, so the hot path keeps its one statement otherwise.
NOTE_ACTIVITY = text("""
INSERT INTO account_activity (account_sid, last_voice_status_at) VALUES (:account, now())
ON CONFLICT (account_sid) DO UPDATE SET last_voice_status_at = excluded.last_voice_status_at
WHERE account_activity.last_voice_status_at < excluded.last_voice_status_at""")
ACTIVITY_EVERY_S = 60.0
_activity_noted: dict[str, float] = {}


def _note_activity(request: Request, account_sid: str) -> None:
    now = time.monotonic()
    if now - _activity_noted.get(account_sid, -ACTIVITY_EVERY_S) < ACTIVITY_EVERY_S:
        return
    if len(_activity_noted) > 100_000:  # a bound on the memory, whatever the number of accounts
        _activity_noted.clear()
    _activity_noted[account_sid] = now
    request.connection.execute(NOTE_ACTIVITY, {"account": account_sid})


def ingest(request: Request) -> Response:
    # One statement on the request's autocommit connection (no BEGIN and COMMIT round trips, no ORM
    # session) when this process has the account's tokens from an earlier request; else a lookup first.
    account_sid = request.param("AccountSid") or ""
    presented = request.header("X-Twilio-Signature") or ""
    if not presented or not is_sid(account_sid, ACCOUNT):
        raise Forbidden()
    urls = requested_urls(request, request.services.settings.public_base_url)
    call_sid = (request.param("CallSid") or "").strip()
    known = _known_tokens.get(account_sid)
    signer = _signer(known, request, urls, presented) if known is not None and is_sid(call_sid, CALL) else None
    if signer is not None:
        values = {"sid": call_sid, "account": account_sid, "start": _start_time(request), "ciphertext": signer}
        if request.connection.execute(RECORD_CALL_IF_SIGNED, values).scalar():
            _note_activity(request, account_sid)
            return Response(204)
        # The token changed (or the account is gone) since this process read it: read it again.
    tokens = _read_tokens(request, account_sid)
    signer = _signer(tokens, request, urls, presented) if tokens is not None else None
    if signer is None:
        raise Forbidden()
    if not is_sid(call_sid, CALL):
        # Signed, so from Twilio (or the account itself), and nothing either could fix by retrying.
        log.warning("status callback without a usable CallSid; nothing recorded", extra={"account_sid": account_sid})
        return Response(204)
    request.connection.execute(RECORD_CALL, {"sid": call_sid, "account": account_sid, "start": _start_time(request)})
    _note_activity(request, account_sid)
    return Response(204)
