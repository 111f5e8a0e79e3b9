"""The WSGI application: route, authenticate, call a handler, render; one place turns errors into JSON."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from api import annotations, feedback, health, summaries, voice_status
from api.auth import authenticate, authorize
from api.errors import ApiError, BadRequest, DatabaseTimedOut, InternalError, ServiceUnavailable
from api.http import FORM_TYPE, Request, Response, deadline, parse_form, read_body
from api.routing import Router
from shared.platform import logs, metrics
from shared.platform.config import Settings
from shared.platform.db import TRANSIENT_ERRORS, statement_cancelled

log = logging.getLogger(__name__)

API_PREFIX = "/2010-04-01/Accounts/{AccountSid}/Calls"
# Longer than any real request to these paths, well inside gunicorn's own limits (which answer in
# plain text): so a too-long request gets a Twilio error from us, not a page from the server.
MAX_PATH_CHARS = 1024
MAX_QUERY_CHARS = 2048
# Every API response: never cached, never sniffed; no server banner is added by us.
COMMON_HEADERS = [("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")]


def listener_port(environ: dict) -> int | None:
    """The local TCP port of the connection the request came in on, from the socket itself. Never
    SERVER_PORT: on a unix-socket bind gunicorn fills it from the Host header, which the client
    writes (`Host: x:9464` on the public socket got /metrics)."""
    sock = environ.get("gunicorn.socket")
    try:
        name = sock.getsockname() if sock is not None else None
    except OSError:
        return None
    return name[1] if isinstance(name, tuple) else None  # a unix socket's name is its path


def error_response(raised: Exception, path: str) -> Response:
    """The one place an exception becomes a response: Twilio's JSON error, with the error's headers
    (Retry-After, Allow) whatever its kind."""
    if isinstance(raised, ApiError):
        error = raised
    elif isinstance(raised, TRANSIENT_ERRORS) and statement_cancelled(raised):
        # With the traceback: it names the statement, the first clue to whose lock it waited for.
        log.warning("database statement cancelled (statement_timeout)", exc_info=raised, extra={"path": path})
        error = DatabaseTimedOut()
    elif isinstance(raised, TRANSIENT_ERRORS):
        log.warning("database unavailable", exc_info=raised)
        error = ServiceUnavailable()
    elif isinstance(raised, DataError):
        # Input PostgreSQL cannot hold (a NUL byte) that a check missed: the client's, not ours.
        log.warning("input the database refused", exc_info=raised, extra={"path": path})
        error = BadRequest("The request holds characters that cannot be stored")
    else:
        log.error("unhandled error", exc_info=raised, extra={"path": path})
        error = InternalError()
    return Response(error.status, error.to_dict(), list(error.headers))


@dataclass
class Services:
    """What handlers reach outside the request: the database, the queue, the settings."""

    settings: Settings
    sessions: sessionmaker[Session]
    enqueue_summary: Callable[[str], bool]
    ping_redis: Callable[[], object]
    check_create_rate: Callable[[str], None] = lambda account_sid: None
    check_feedback_rate: Callable[[str], None] = lambda account_sid: None

    @functools.cached_property
    def autocommit_engine(self) -> Engine:
        """The sessions' engine (its pool), handing out connections in autocommit: api/http.py Request."""
        return self.sessions.kw["bind"].execution_options(isolation_level="AUTOCOMMIT")


def build_router(metrics_elsewhere: bool = False) -> Router:
    """The public routes; /metrics among them unless it is served on a port of its own."""
    router = Router()
    router.add(f"{API_PREFIX}/FeedbackSummary.json", POST=summaries.create)
    router.add(f"{API_PREFIX}/FeedbackSummary/{{Sid}}.json", GET=summaries.fetch, DELETE=summaries.delete)
    router.add(f"{API_PREFIX}/{{CallSid}}/Feedback.json", GET=feedback.fetch, POST=feedback.update)
    # Voice Insights call annotations: the account is the credentials' (no AccountSid in the path).
    router.add("/v1/Voice/{CallSid}/Annotation", GET=annotations.fetch, POST=annotations.update)
    # Twilio's call status callbacks: signed with the account's token instead of Basic auth.
    router.add("/twilio/voice/status", authenticated=False, POST=voice_status.ingest)
    router.add("/healthz", authenticated=False, GET=health.healthz)
    router.add("/readyz", authenticated=False, GET=health.readyz)
    if not metrics_elsewhere:
        router.add("/metrics", authenticated=False, GET=health.metrics)
    router.add("/openapi.json", authenticated=False, GET=health.openapi)
    return router


def build_metrics_router() -> Router:
    """METRICS_PORT: the metrics (and liveness) alone, on a port the public never reaches."""
    router = Router()
    router.add("/metrics", authenticated=False, GET=health.metrics)
    router.add("/healthz", authenticated=False, GET=health.healthz)
    return router


# Metric labels come from closed sets: a made-up method is "other", an unknown path "unmatched".
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _form(body: bytes, environ: dict, settings: Settings) -> dict[str, list[str]]:
    if not body:
        return {}
    content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type not in ("", FORM_TYPE):
        raise BadRequest(f"Content-Type must be {FORM_TYPE}")
    return parse_form(body, settings.max_form_fields)


class App:
    def __init__(self, services: Services):
        self.services = services
        self.metrics_port = services.settings.metrics_port
        self.router = build_router(metrics_elsewhere=self.metrics_port is not None)
        self.metrics_router = build_metrics_router()
        self._labelled: dict[tuple[str, str, int], tuple] = {}

    def _metrics_for(self, route: str, method_label: str, status: int):
        """The request counter and latency histogram of these labels, looked up once per process
        (labels() takes a lock and builds its key on every call). The labels are closed sets."""
        key = (route, method_label, status)
        found = self._labelled.get(key)
        if found is None:
            found = self._labelled[key] = (metrics.HTTP_REQUESTS.labels(route, method_label, str(status)),
                                           metrics.HTTP_LATENCY.labels(route, method_label))
        return found

    def _router_for(self, environ: dict) -> Router:
        if self.metrics_port is not None and listener_port(environ) == self.metrics_port:
            return self.metrics_router
        return self.router

    def __call__(self, environ: dict, start_response):
        request_id = "RQ" + secrets.token_hex(16)
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        started = time.perf_counter()
        route = "unmatched"
        with logs.bind(request_id=request_id):
            try:
                if len(path) > MAX_PATH_CHARS or len(environ.get("QUERY_STRING", "")) > MAX_QUERY_CHARS:
                    raise BadRequest(f"The URL is too long (path at most {MAX_PATH_CHARS} characters, query "
                                     f"string at most {MAX_QUERY_CHARS})")
                matched, handler, params = self._router_for(environ).match(method, path)
                route = matched.template
                response = self.handle(environ, method, path, request_id, matched, handler, params)
            except Exception as raised:  # noqa: BLE001  (every failure becomes a Twilio error: error_response)
                response = error_response(raised, path)
            elapsed_s = time.perf_counter() - started
            counter, latency = self._metrics_for(route, method if method in KNOWN_METHODS else "other",
                                                 response.status)
            counter.inc()
            latency.observe(elapsed_s)
            log.info("request", extra={"method": method, "route": route, "status": response.status,
                                       "duration_ms": round(elapsed_s * 1000, 2)})
        body = response.encode()
        headers = [*COMMON_HEADERS, ("Twilio-Request-Id", request_id), *response.headers]
        if body:
            headers += [("Content-Type", response.content_type), ("Content-Length", str(len(body)))]
        start_response(response.status_line(), headers)
        return [body] if body and method != "HEAD" else []

    def handle(self, environ: dict, method: str, path: str, request_id: str, route, handler, params) -> Response:
        settings = self.services.settings
        body = b""
        if method == "POST":
            # Whole, within its deadline, before any database connection is taken: a client that
            # sends its body slowly holds a greenlet, never one of the pool's connections.
            with deadline(settings.request_body_timeout_s):
                body = read_body(environ, settings.max_body_bytes)
        request = Request(method, path, request_id, environ, services=self.services)
        try:
            if not route.authenticated:
                request.form = _form(body, environ, settings)
                return handler(request, **params)
            request.caller = caller = authenticate(request, environ.get("HTTP_AUTHORIZATION"))
            # A path without an account (the Insights API's) acts as the credentials' account.
            account_sid = params.pop("AccountSid", None)
            account = authorize(request, caller, account_sid, path) if account_sid is not None else caller
            logs.add(account_sid=account.sid)
            request.form = _form(body, environ, settings)
            return handler(request, account, **params)
        finally:
            request.close()
