"""The console's WSGI application: who is asking (console/sessions.py), the route, the page or the
action, and the headers every answer carries. One place turns an error into a page.

Every answer: a Content-Security-Policy that allows only this origin's own scripts, styles and images
(no inline script, no connection elsewhere), X-Frame-Options DENY, no caching, no sniffing, no
referrer. Every POST: not from another site by the browser's word (Sec-Fetch-Site), and the
session's CSRF token.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import OperationalError

from console import acts, notices, pages, sessions
from console.queries import BadFilter
from console.web import HttpError, Request, Response, redirect
from shared.errors import ActionRefused
from shared.operator import users
from shared.platform.config import Settings, get_settings
from shared.platform.db import get_engine

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
SECURITY_HEADERS = [
    ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
                                "frame-ancestors 'none'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
PUBLIC = {"/sign-in", "/healthz"}  # every other path needs a signed-in user

Handler = Callable[..., Response]
# (method, pattern, handler, needs the operator role)
ROUTES: list[tuple[str, re.Pattern, Handler, bool]] = [
    ("GET", re.compile(r"/"), pages.overview, False),
    ("GET", re.compile(r"/summaries"), pages.summaries, False),
    ("GET", re.compile(r"/summaries/(FS[0-9a-f]{32})"), pages.summary, False),
    ("GET", re.compile(r"/deliveries"), pages.deliveries, False),
    ("GET", re.compile(r"/destinations"), pages.destinations, False),
    ("GET", re.compile(r"/accounts"), pages.accounts, False),
    ("GET", re.compile(r"/accounts/(AC[0-9a-f]{32})"), pages.account, False),
    ("GET", re.compile(r"/purge"), pages.purge, False),
    ("POST", re.compile(r"/summaries/(FS[0-9a-f]{32})/retry"), acts.retry, True),
    ("POST", re.compile(r"/summaries/(FS[0-9a-f]{32})/redeliver"), acts.redeliver_one, True),
    ("POST", re.compile(r"/deliveries/redeliver"), acts.redeliver_plan, True),
    ("POST", re.compile(r"/deliveries/redeliver/send"), acts.redeliver_send, True),
    ("POST", re.compile(r"/circuits/close"), acts.close_circuit, True),
    ("POST", re.compile(r"/purge"), acts.purge, True),
    ("GET", re.compile(r"/sign-in"), pages.sign_in, False),
    ("POST", re.compile(r"/sign-in"), acts.sign_in, False),
    ("POST", re.compile(r"/sign-out"), acts.sign_out, False),
]


def templates() -> Environment:
    environment = Environment(loader=FileSystemLoader(HERE / "templates"),
                              autoescape=select_autoescape(default=True, default_for_string=True),
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(pages.FILTERS)
    return environment


class Console:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self.templates = templates()

    def render(self, request: Request, name: str, code: int = 200, **context) -> Response:
        body = self.templates.get_template(name).render(user=request.user, csrf=request.session.csrf
                                                        if request.session else "", path=request.path,
                                                        query=request.query, notice=notices.read(request.query, request.user.name if request.user else None),
                                                        **context)
        return Response(code, body.encode("utf-8"))

    def stream(self, request: Request, name: str, **context) -> Response:
        """A page sent as it is rendered: a long action's progress reaches the browser line by line."""
        chunks = self.templates.get_template(name).generate(user=request.user, csrf=request.session.csrf,
                                                            path=request.path, query=request.query, notice=None,
                                                            **context)
        return Response(200, (chunk.encode("utf-8") for chunk in chunks))

    def __call__(self, environ: dict, start_response):
        started = time.perf_counter()
        request = None
        try:
            try:
                request = Request.from_environ(environ)
            except HttpError:
                # Unreadable parameters: the error page still has the session's user and token.
                request = Request.bare(environ)
                request.session = sessions.read(request.cookies.get(sessions.COOKIE), self.settings)
                raise
            response = self.respond(request)
        except HttpError as error:
            response = self.error_page(request, error.status, error.message)
            response.headers += error.headers
        except (BadFilter, ActionRefused) as error:
            response = self.error_page(request, 400, str(error))
        except OperationalError:
            log.warning("database unavailable", exc_info=True)
            response = self.error_page(request, 503, "The database cannot be reached; try again shortly.")
        except Exception:
            log.exception("console error", extra={"path": environ.get("PATH_INFO")})
            response = self.error_page(request, 500, "Something went wrong; the log has the details.")
        own = {name.lower() for name, _ in response.headers}
        headers = [("Content-Type", response.content_type),
                   *((name, value) for name, value in SECURITY_HEADERS if name.lower() not in own), *response.headers]
        if request is not None and request.session is not None and request.session.fresh:
            headers.append(sessions.cookie_header(request.session, request.secure, self.settings))
        start_response(response.status_line(), headers)
        if not (request and request.path.startswith("/static/")) and environ.get("PATH_INFO") != "/healthz":
            # The page's server time (a streamed page: until its first byte). Never the query string.
            log.info("request", extra={"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO", "")[:200],
                                       "status": response.status, "user": request.user.name if request and request.user
                                       else None, "duration_ms": round((time.perf_counter() - started) * 1000, 2)})
        body = response.body
        return [body] if isinstance(body, bytes) else body

    def error_page(self, request: Request | None, status: int, message: str) -> Response:
        if request is None:
            return Response(status, message.encode("utf-8"), "text/plain; charset=utf-8")
        return self.render(request, "error.html", status, status=status, message=message)

    def respond(self, request: Request) -> Response:
        if request.path.startswith("/static/"):
            return static(request.path[len("/static/"):])
        if request.path == "/healthz":
            return Response(200, b"ok\n", "text/plain; charset=utf-8")
        request.session = sessions.read(request.cookies.get(sessions.COOKIE), self.settings)
        self.identify(request)
        matched = [(handler, operator_only, found.groups()) for method, pattern, handler, operator_only in ROUTES
                   if (found := pattern.fullmatch(request.path)) and method == request.method]
        if not matched:
            allowed = sorted({method for method, pattern, _, _ in ROUTES if pattern.fullmatch(request.path)})
            if allowed:
                raise HttpError(405, "That page does not take this method.", [("Allow", ", ".join(allowed))])
            raise HttpError(404, "There is no such page.")
        handler, operator_only, arguments = matched[0]
        if request.method == "POST":
            self.check_post(request)
        if request.user is None and request.path not in PUBLIC:
            if request.method == "GET":
                return redirect("/sign-in?next=" + quote(request.path + (
                    "?" + request.environ["QUERY_STRING"] if request.environ.get("QUERY_STRING") else ""), safe=""))
            raise HttpError(403, "Sign in first.")
        if operator_only and not request.user.may_act:
            raise HttpError(403, "Your role (viewer) may look, not act: nothing was changed.")
        return handler(self, request, *arguments)

    def identify(self, request: Request) -> None:
        named = sessions.trusted_user(request.environ, self.settings)
        name = named if named is not None else request.session.user
        if not name:
            return
        from sqlalchemy.orm import Session

        with Session(get_engine()) as db:
            request.user = users.find(db, name)
        if request.user is None and named is not None:
            raise HttpError(403, "The single sign-on proxy names a user the console does not know; create it "
                                 "with `summaries console-users create`.")
        if named is None and request.user is not None and request.user.session_key != request.session.key:
            request.user = None  # signed out since (everywhere), or deleted and created again
        if request.user is None:  # deleted since it signed in: its session ends now
            request.session = sessions.new_session()

    def check_post(self, request: Request) -> None:
        # The browser says where the form came from (Sec-Fetch-Site), whatever a proxy did to Host: a
        # POST from another site, even a sibling subdomain, is refused before its token is looked at.
        if request.header("Sec-Fetch-Site") in ("cross-site", "same-site"):
            raise HttpError(403, "This form came from another site; nothing was changed.")
        if not sessions.csrf_ok(request.session, request.form.get("csrf")):
            raise HttpError(403, "This form has expired or did not come from the console (no valid CSRF "
                                 "token); nothing was changed. Load the page again.")


def static(name: str) -> Response:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise HttpError(404, "There is no such file.")
    path = STATIC / name
    if not path.is_file():
        raise HttpError(404, "There is no such file.")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript",):
        kind += "; charset=utf-8"
    return Response(200, path.read_bytes(), kind, [("Cache-Control", "max-age=3600")])

