"""Requests and responses of the console: plain WSGI, as the API is, with what a browser needs (a
form, a query string, cookies, HTML pages and redirects). The query and the form are parsed strictly:
a value given twice, bad UTF-8 or too many fields is a 400, never a guess."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 50


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or []


def _parse(text: str) -> dict[str, str]:
    try:
        parsed = parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "The request's parameters could not be read") from None
    if any(len(values) > 1 for values in parsed.values()):
        raise HttpError(400, "A parameter was given more than once")
    if any(ch < " " and ch not in "\t\r\n" for values in parsed.values() for ch in values[0]):
        raise HttpError(400, "A parameter holds a control character")  # PostgreSQL's text takes no NUL
    return {name: values[0] for name, values in parsed.items()}


@dataclass
class Request:
    environ: dict
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)
    session: Any = None  # console.sessions.Session, once read
    user: Any = None  # shared.operator.users.User, when signed in

    @classmethod
    def bare(cls, environ: dict) -> Request:
        """The request without its parameters (they could not be read), for the error page."""
        request = cls(environ, environ.get("REQUEST_METHOD", "GET").upper(), "/", {})
        request.cookies = _cookies(environ)
        return request

    @classmethod
    def from_environ(cls, environ: dict) -> Request:
        try:
            path = environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise HttpError(400, "The path is not UTF-8") from None
        request = cls(environ, environ.get("REQUEST_METHOD", "GET").upper(), path or "/",
                      _parse(environ.get("QUERY_STRING", "")))
        request.cookies = _cookies(environ)
        if request.method == "POST":
            request.form = _parse(_form_text(environ)) if _is_form(environ) else {}
        return request

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    @property
    def remote_addr(self) -> str:
        return self.environ.get("REMOTE_ADDR") or ""

    @property
    def secure(self) -> bool:
        return self.environ.get("wsgi.url_scheme") == "https"


def _cookies(environ: dict) -> dict[str, str]:
    """Each `name=value` of the Cookie header. Not http.cookies: it drops the whole header for one
    cookie it dislikes (`a;`, a JSON value), and another site on this host may set one."""
    found: dict[str, str] = {}
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in found:
            found[name] = value.strip()
    return found


def _is_form(environ: dict) -> bool:
    return (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded"


def _form_text(environ: dict) -> str:
    try:
        return _read_body(environ).decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "The form is not UTF-8") from None


def _read_body(environ: dict) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError(400, "Content-Length must be a number") from None
    if length < 0 or length > MAX_FORM_BYTES:
        raise HttpError(413, "The form is too large")
    return environ["wsgi.input"].read(length) if length else b""


@dataclass
class Response:
    status: int = 200
    body: bytes | Iterable[bytes] = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"


def redirect(location: str, status: int = 303) -> Response:
    return Response(status, b"", headers=[("Location", location)])


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a path of this console, never another site (`//evil`, `/\\evil`,
    `https://evil`, a scheme in disguise all come back as /)."""
    if not raw or not raw.startswith("/") or raw.startswith(("//", "/\\")) or any(ord(c) < 33 for c in raw):
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return "/"
    query = quote(parts.query, safe="=&;%+/?:@-._~,") if parts.query else ""
    return quote(parts.path, safe="/-._~%") + (f"?{query}" if query else "")
