"""Where a callback may connect, and how long one attempt may take.

The SSRF guard: a callback may not reach loopback, private, link-local, multicast or reserved
addresses, unless the operator allows their network (CALLBACK_ALLOWED_NETWORKS). The address is
checked twice: once resolved, before anything is sent (a forbidden one is final, and slots and
circuits are keyed by it), and again on the connected socket itself, before a single byte, TLS
handshake included, leaves: a name that resolves differently in between (DNS rebinding) gains
nothing.

The deadline: `requests` only bounds each read, so a receiver answering one byte every few seconds
could hold a worker thread for minutes. Every socket an attempt opens is registered with its
Deadline, which shuts the socket down when the attempt's total time (connect, TLS, headers, body)
is up; the attempt then ends with an error and counts as an attempt.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class ForbiddenAddress(Exception):
    """Raised when a callback's connection reached an address it may not reach. Deliberately not an
    OSError: urllib3 and requests would wrap it as a connection error, which is retried; this is final."""


def is_forbidden(address: str, allowed: tuple = ()) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return False
    return not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local \
        or ip.is_private or ip.is_unspecified


def resolve(host: str, port: int) -> str:
    """The address a connection to host would go to first, in canonical form (so `0x7f000004`,
    `127.0.0.4` and a wildcard DNS name for it are one destination). Raises OSError."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return str(ipaddress.ip_address(sockaddr[0].split("%")[0]))


class Deadline:
    """One attempt's total time. Sockets opened inside `with deadline:` are shut down when it passes;
    finish() (called as soon as the answer is read) ends the watch before anything is closed, so a
    file descriptor reused by another thread's connection is never touched."""

    _local = threading.local()

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._fds: list[int] = []
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        Deadline._local.current = self
        self._started = time.monotonic()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
        Deadline._local.current = None

    def remaining_s(self) -> float:
        return max(0.001, self.seconds - (time.monotonic() - self._started))

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            self._fds.append(sock.fileno())
            expired = self.expired
        if expired:
            sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for fd in self._fds:
                try:
                    # A duplicate of the descriptor: shutting it down ends the connection that the
                    # attempt's thread is blocked on, whatever wraps it (TLS included).
                    with socket.socket(fileno=os.dup(fd)) as handle:
                        handle.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @classmethod
    def current(cls) -> Deadline | None:
        return getattr(cls._local, "current", None)


def _guarded(connection_class, allowed: tuple):
    class Guarded(connection_class):
        def _new_conn(self):
            # Called by connect() for plain and TLS connections alike, before any TLS byte.
            sock = super()._new_conn()
            peer = sock.getpeername()[0]
            if is_forbidden(peer, allowed):
                sock.close()
                raise ForbiddenAddress(f"refused: {self.host} is {peer}, a non-public address")
            deadline = Deadline.current()
            if deadline is not None:
                deadline.watch(sock)
            return sock

    return Guarded


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allowed: tuple, **kwargs):
        self._allowed = allowed
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        allowed = self._allowed

        class GuardedHTTP(HTTPConnectionPool):
            ConnectionCls = _guarded(HTTPConnection, allowed)

        class GuardedHTTPS(HTTPSConnectionPool):
            ConnectionCls = _guarded(HTTPSConnection, allowed)

        self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTP, "https": GuardedHTTPS}


def guarded_session(allowed: tuple) -> requests.Session:
    """A session for one attempt (a new connection each time, so each is guarded and watched), with
    the guard mounted and no proxies from the environment, which would hide the address connected to."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(allowed, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
