"""An in-process browser for the console: keeps its cookie, reads each page's CSRF token, follows
nothing by itself (each test sees the redirects it causes)."""

from __future__ import annotations

import html
import io
import re
from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.orm import Session

from shared.operator import users

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
PASSWORD = "correct horse battery"


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def csrf(self) -> str | None:
        found = CSRF.search(self.body)
        return html.unescape(found.group(1)) if found else None

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")


class ConsoleClient:
    def __init__(self, app, remote_addr: str = "127.0.0.1"):
        self.app, self.remote_addr, self.cookie = app, remote_addr, None
        self.csrf: str | None = None

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None,
                query: str = "", remote_addr: str | None = None) -> Page:
        if "?" in path:
            path, query = path.split("?", 1)
        body = urlencode(form or {}).encode()
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "localhost",
                   "SERVER_PORT": "8081", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
                   "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": remote_addr or self.remote_addr,
                   "HTTP_HOST": "localhost:8081"}
        if method == "POST":
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        for name, value in (headers or {}).items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        captured = {}

        def start_response(status, response_headers):
            captured["status"] = int(status.split()[0])
            captured["headers"] = response_headers

        body_out = b"".join(self.app(environ, start_response)).decode("utf-8")
        headers_out = dict(captured["headers"])
        for name, value in captured["headers"]:
            if name == "Set-Cookie":
                self.cookie = value.split(";", 1)[0]
        page = Page(captured["status"], headers_out, body_out)
        if page.csrf:
            self.csrf = page.csrf
        return page

    def get(self, path: str, **kwargs) -> Page:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict | None = None, csrf: bool = True, **kwargs) -> Page:
        form = dict(form or {})
        if csrf:
            form.setdefault("csrf", self.csrf or "")
        return self.request("POST", path, form, **kwargs)

    def sign_in(self, name: str, password: str = PASSWORD) -> Page:
        """Sign in through the form; then, as a browser does, load the page it leads to (its token)."""
        self.get("/sign-in")
        page = self.post("/sign-in", {"name": name, "password": password})
        if page.status == 303:
            self.get(page.location)
        return page


def make_user(engine, name: str, role: str, password: str | None = PASSWORD) -> None:
    with Session(engine) as session:
        users.create(session, name, role, password)
        session.commit()
