"""A real HTTP receiver on a loopback port for the callback tests: it answers each path from a
script of responses and records every request it got."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    body: bytes = b"ok"
    drip_s: float = 0.0  # > 0: the whole answer, status line first, one byte at a time this far apart


@dataclass(frozen=True)
class Received:
    method: str
    url: str  # as the sender addressed it: http://host:port/path?query
    headers: dict
    form: dict  # POST body, parsed
    query: dict
    at: float  # time.monotonic() when it arrived


def serve(handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, str]:
    """A threading HTTP server on a free loopback port (127.0.0.2 is another destination), serving
    from a daemon thread, and its base URL."""
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass  # no access log on the tests' stderr


class Receiver:
    def __init__(self, host: str = "127.0.0.1"):
        self.scripts: dict[str, list[Reply]] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            disable_nagle_algorithm = True  # headers and body go out as separate writes
            def _handle(self):
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                path = urlsplit(self.path).path
                with receiver._lock:
                    receiver.received.append(Received(
                        self.command, f"http://{self.headers['Host']}{self.path}", dict(self.headers),
                        {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()},
                        {k: v[0] for k, v in parse_qs(urlsplit(self.path).query, keep_blank_values=True).items()},
                        arrived))
                    script = receiver.scripts.get(path, [])
                    reply = script.pop(0) if len(script) > 1 else (script[0] if script else Reply())
                time.sleep(reply.delay_s)
                try:
                    if reply.drip_s:
                        raw = (f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(reply.body)}\r\n\r\n".encode()
                               + reply.body)
                        for i in range(len(raw)):
                            self.wfile.write(raw[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.drip_s)
                        self.close_connection = True
                        return
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the sender timed out and left

            do_GET = do_POST = _handle

        self.server, self.base_url = serve(Handler, host)

    def script(self, path: str, *replies: Reply) -> str:
        """Answer `path` with these replies in order, the last one from then on; returns its URL."""
        self.scripts[path] = list(replies)
        return self.base_url + path

    def requests_to(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if urlsplit(r.url).path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
