"""Slow clients against the Procfile's `web` server (gunicorn with api/gunicorn_conf.py, two
processes), over real sockets: dozens of connections dripping their headers or their body never
keep /healthz from answering within a second, and each is cut off at its deadline."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from tests.processes import gunicorn

pytestmark = pytest.mark.slow

DRIPPERS = 48
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2, 2


def drip(host: str, port: int, head: bytes, byte: bytes, seconds: float, outcome: dict, key: int) -> None:
    """Send `head`, then one `byte` every 0.5 s until the server closes the connection or time is up;
    note when (and with what first bytes) it ended."""
    began = time.monotonic()
    with socket.create_connection((host, port), timeout=seconds + 5) as sock:
        sock.sendall(head)
        sock.settimeout(0.5)
        received = b""
        while time.monotonic() - began < seconds:
            try:
                sock.sendall(byte)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
            except socket.timeout:
                continue
            except OSError:  # reset by the server
                break
        outcome[key] = (time.monotonic() - began, received[:32])


def probe_healthz(base_url: str, seconds: float) -> list[float]:
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.monotonic()
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=1) as response:
                assert response.status == 200
            latencies.append(time.monotonic() - began)
        except OSError:
            latencies.append(float("inf"))
        time.sleep(0.2)
    return latencies


def dripping(base_url: str, heads: list[bytes], seconds: float) -> tuple[list[float], dict[int, tuple[float, bytes]]]:
    """DRIPPERS connections, each sending heads[i % len(heads)] then a byte every 0.5 s, while /healthz
    is probed for 5 s: the probe's latencies, and how each dripper ended."""
    host, port = base_url.removeprefix("http://").split(":")
    outcome: dict[int, tuple[float, bytes]] = {}
    threads = [threading.Thread(target=drip, args=(host, int(port), heads[i % len(heads)], b"X", seconds, outcome, i),
                                daemon=True) for i in range(DRIPPERS)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # let every dripper connect first
    latencies = probe_healthz(base_url, 5)
    for thread in threads:
        thread.join(timeout=20)
    return latencies, outcome


@pytest.mark.parametrize("what", ["headers", "body"])
def test_dripping_clients_never_stop_the_api_and_are_cut_off_at_their_deadline(service_urls, tmp_path, what):
    process, base_url = gunicorn(tmp_path, workers=2, env={"REQUEST_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
                                                          "REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    try:
        if what == "headers":
            head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        else:
            head = (b"POST /twilio/voice/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                    b"\r\nContent-Length: 1000\r\n\r\n")
        latencies, outcome = dripping(base_url, [head], 12)
    finally:
        process.stop()
    assert len(latencies) >= 15 and max(latencies) < 1.0, latencies
    assert len(outcome) == DRIPPERS
    ended = sorted(seconds for seconds, _ in outcome.values())
    if what == "headers":
        # Cut off at the header deadline (gunicorn closes the connection without an answer).
        assert ended[-1] < HEADER_TIMEOUT_S + 3, ended
    else:
        # A Twilio-format 408 at the body deadline, then the connection ends.
        assert all(first.startswith(b"HTTP/1.1 408") for _, first in outcome.values()), outcome
        assert ended[0] >= BODY_TIMEOUT_S - 0.5 and ended[-1] < BODY_TIMEOUT_S + 8, ended


def test_dripping_clients_never_stop_the_console(service_urls, tmp_path):
    """The console under the Procfile's configuration, one process: half-sent headers and bodies hold
    a greenlet each, never the process (threads did: eight stopped it, found by review)."""
    from tests.processes import console_server

    process, base_url = console_server(tmp_path, env={"REQUEST_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)})
    try:
        heads = [b"GET / HTTP/1.1\r\nHost: x\r\n",
                 b"POST /sign-in HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: 1000\r\n\r\n"]
        latencies, outcome = dripping(base_url, heads, 8)
    finally:
        process.stop()
    assert len(latencies) >= 15 and max(latencies) < 1.0, latencies
    header_drippers = sorted(outcome[i][0] for i in range(0, DRIPPERS, 2))
    assert header_drippers[-1] < HEADER_TIMEOUT_S + 3, header_drippers
