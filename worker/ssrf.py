"""Where a callback may connect, and how long one attempt may take.

The SSRF guard: a callback may not reach loopback, private, link-local, multicast or reserved
addresses, unless the operator allows their network (CALLBACK_ALLOWED_NETWORKS). The address is
checked twice: once resolved, before anything is sent (a forbidden one is final, and slots and
circuits are keyed by it), and again on the connected socket itself, before a single byte, TLS
handshake included, leaves: a name that resolves differently in between (DNS rebinding) gains
nothing.

The deadline: `requests` only bounds each read, so a receiver answering one byte every few seconds
could hold a worker thread for minutes. Every socket an attempt opens (or reuses) is registered
with its Deadline, which shuts the socket down when the attempt's total time (connect, TLS,
headers, body) is up; the attempt then ends with an error and counts as an attempt. One watchdog
thread per process keeps every deadline.

Connections are kept alive, per worker thread and for its latest destination only, for at most
KEEPALIVE_IDLE_S between requests: a busy receiver is not paying a connect (and a TLS handshake)
per callback. Only new connections need the peer check (a connected socket's peer cannot change);
a reused one is registered with the new attempt's Deadline like a new one.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import os
import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from shared.errors import ForbiddenAddress


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

    def __enter__(self) -> Deadline:
        Deadline._local.current = self
        self._started = time.monotonic()
        _WATCHDOG.watch(self, self._started + self.seconds)
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


# Below common servers' keep-alive timeouts (gunicorn 2 s, Node and Apache 5 s), so a connection is
# rarely reused just as its server closes it; and a name that now resolves elsewhere is followed
# within that time.
KEEPALIVE_IDLE_S = 1.0


class _Watchdog:
    """One thread per process expires every Deadline when its time is up: a thread started and
    stopped per attempt cost about 0.2 ms of CPU, a heap entry costs microseconds. A finished
    deadline stays in the heap until it reaches the top, and is then dropped (_expire does nothing
    once it is done)."""

    def __init__(self):
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline, at: float) -> None:
        with self._condition:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="callback-deadlines", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (at, next(self._order), deadline))
            if self._heap[0][2] is deadline:
                self._condition.notify()  # sooner than what the thread sleeps towards

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                # Due ones expire; finished ones (most, long before their time) are dropped unseen,
                # so the thread sleeps until the earliest deadline still running.
                while self._heap and (self._heap[0][0] <= now or self._heap[0][2]._done):
                    heapq.heappop(self._heap)[2]._expire()
                self._condition.wait(self._heap[0][0] - now if self._heap else None)

    def _after_fork(self) -> None:
        # A forked child has neither the thread nor, safely, the lock: start afresh.
        self.__init__()


_WATCHDOG = _Watchdog()
os.register_at_fork(after_in_child=_WATCHDOG._after_fork)


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


def _guarded_pool(pool_class, connection_class, allowed: tuple):
    class GuardedPool(pool_class):
        ConnectionCls = _guarded(connection_class, allowed)

        def _get_conn(self, timeout=None):
            conn = super()._get_conn(timeout)
            if conn is not None and conn.sock is not None:  # kept alive: connected and peer-checked
                if time.monotonic() - getattr(conn, "cfs_idle_since", 0.0) > KEEPALIVE_IDLE_S:
                    conn.close()  # the next request connects (and is checked) anew
                else:
                    deadline = Deadline.current()
                    if deadline is not None:
                        deadline.watch(conn.sock)
            return conn

        def _put_conn(self, conn):
            if conn is not None:
                conn.cfs_idle_since = time.monotonic()
            super()._put_conn(conn)

    return GuardedPool


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allowed: tuple, **kwargs):
        self._allowed = allowed
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        allowed = self._allowed
        self.poolmanager.pool_classes_by_scheme = {"http": _guarded_pool(HTTPConnectionPool, HTTPConnection, allowed),
                                                   "https": _guarded_pool(HTTPSConnectionPool, HTTPSConnection,
                                                                          allowed)}


def guarded_session(allowed: tuple) -> requests.Session:
    """A session with the guard mounted and no proxies from the environment, which would hide the
    address connected to."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(allowed, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


_thread = threading.local()


def send(prepared: requests.PreparedRequest, allowed: tuple, timeout: tuple[float, float]) -> requests.Response:
    """Send on this thread's guarded adapter: no redirects followed, no proxies, no cookies kept,
    certificates verified; at most one kept-alive connection, to the latest destination. Call it
    inside `with Deadline(...)`, and close the response before the deadline's thread could reuse
    the connection for another attempt (it is this thread's alone)."""
    adapter = getattr(_thread, "adapter", None)
    if adapter is None or adapter._allowed != allowed:
        adapter = _thread.adapter = _GuardedAdapter(allowed, max_retries=0, pool_connections=1, pool_maxsize=1)
    return adapter.send(prepared, stream=True, timeout=timeout, verify=True, cert=None, proxies={})
