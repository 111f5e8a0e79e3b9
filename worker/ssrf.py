"""The SSRF guard: a callback may not reach loopback, private, link-local, multicast or reserved
addresses, unless the operator allows their network (CALLBACK_ALLOWED_NETWORKS).

The check is made on the address actually connected to, after the connection is made, so a name
that resolves differently between a check and the request (DNS rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import threading

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


def _guarded(connection_class, allowed: tuple):
    class Guarded(connection_class):
        def connect(self):
            super().connect()
            peer = self.sock.getpeername()[0]
            if is_forbidden(peer, allowed):
                self.sock.close()
                raise ForbiddenAddress(f"refused: {self.host} is {peer}, a non-public address")

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


_local = threading.local()


def guarded_session(allowed: tuple) -> requests.Session:
    """One session per thread (requests sessions are not thread-safe), with the guard mounted and no
    proxies from the environment, which would hide the address really connected to."""
    session = getattr(_local, "session", None)
    if session is None or getattr(_local, "allowed", None) != allowed:
        session = requests.Session()
        session.trust_env = False
        adapter = _GuardedAdapter(allowed, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session, _local.allowed = session, allowed
    return session
