"""Requests and responses: bounded body reading, strict form parsing, JSON rendering."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from api.errors import BadRequest, PayloadTooLarge, RequestTimeout

FORM_TYPE = "application/x-www-form-urlencoded"


@contextlib.contextmanager
def deadline(seconds: float):
    """Raise RequestTimeout if the block takes longer, where the server can interrupt a read: under
    gevent (the Procfile's server). Elsewhere (tests in process, a sync server) it only runs the block."""
    try:
        from gevent import Timeout
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a dependency
        yield
        return
    if not is_module_patched("socket"):
        yield
        return
    with Timeout(seconds, RequestTimeout(seconds)):
        yield


def read_body(environ: dict, max_bytes: int) -> bytes:
    """Read at most max_bytes; a larger body (declared or actual) is a 413, never read whole."""
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise BadRequest("Content-Length must be a non-negative integer") from None
        if length < 0:
            raise BadRequest("Content-Length must be a non-negative integer")
        if length > max_bytes:
            raise PayloadTooLarge(max_bytes)
        return environ["wsgi.input"].read(length) if length else b""
    # No length (chunked): gunicorn hands over the decoded stream; read one byte past the cap to tell.
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() != "chunked":
        return b""
    body = environ["wsgi.input"].read(max_bytes + 1)
    if len(body) > max_bytes:
        raise PayloadTooLarge(max_bytes)
    return body


def parse_form(body: bytes, max_fields: int) -> dict[str, list[str]]:
    try:
        text = body.decode("utf-8")
        return parse_qs(text, keep_blank_values=True, errors="strict", max_num_fields=max_fields)
    except UnicodeDecodeError:
        raise BadRequest("The request body is not valid UTF-8") from None
    except ValueError:
        raise BadRequest(f"The request has more than {max_fields} parameters") from None


@dataclass
class Request:
    method: str
    path: str
    request_id: str
    environ: dict
    caller: Any = None  # the authenticated api.auth.Caller (a parent acting on a subaccount's path: the parent)
    services: Any = None  # api.app.Services
    form: dict[str, list[str]] = field(default_factory=dict)
    _connection: Any = None
    _session: Any = None

    @property
    def connection(self):
        """The request's pooled connection in autocommit, each statement its own transaction: the
        hot paths read and write with single statements, without BEGIN and COMMIT round trips or an
        ORM session. Taken on first use."""
        if self._connection is None:
            self._connection = self.services.autocommit_engine.connect()
        return self._connection

    @property
    def session(self):
        """An ORM session, for the paths that need a transaction of several statements. The
        connection is given back first: a request never holds two of the pool's connections."""
        if self._session is None:
            self.release_connection()
            self._session = self.services.sessions()
        return self._session

    def release_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    def close(self) -> None:
        """Give back what the request took (an uncommitted session transaction rolls back)."""
        try:
            if self._session is not None:
                self._session.close()
        finally:
            self.release_connection()

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def param(self, name: str) -> str | None:
        """A single-valued form parameter; given twice it is ambiguous, so it is refused."""
        values = self.form.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"Parameter {name} was given more than once")
        return values[0]

    def params(self, name: str) -> list[str]:
        return self.form.get(name, [])


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes | None = None  # a body that is not JSON (the metrics), sent as is with content_type
    content_type: str = "application/json; charset=utf-8"

    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body, separators=(",", ":")).encode("utf-8")
