"""How every Redis client of the project reaches Redis: the Celery broker (shared/platform/queue.py),
the project's own client (in-flight markers, the callback breaker and slots) and the create rate
limit (api/ratelimit.py) all take their TLS and Sentinel options from here, so none of them can
connect differently from the others. docs/redis.md is the user's side of it.

REDIS_URL forms:
  redis://[[user]:password@]host[:6379][/db]        rediss:// for TLS
  sentinel://[[user]:password@]host[:26379],host[:26379]...[/db] with REDIS_SENTINEL_MASTER,
                                                     sentinels:// for TLS to the sentinels and to Redis;
                                                     REDIS_SENTINEL_PASSWORD for sentinels with requirepass
TLS verifies Redis's certificate and host name, against REDIS_TLS_CA_FILE or the system's trust
store, unless REDIS_TLS_VERIFY=false.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urlsplit

from shared.platform.config import SENTINEL_SCHEMES, SettingError, Settings

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

SENTINEL_PORT = 26379


@dataclass(frozen=True)
class Target:
    url: str
    tls: bool
    sentinels: tuple[tuple[str, int], ...] = ()  # empty: Redis itself at `url`
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_url(url: str, name: str = "REDIS_URL") -> Target:
    """The Redis behind a URL; a malformed sentinel URL raises SettingError naming the variable."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SENTINEL_SCHEMES:
        return Target(url=url, tls=scheme == "rediss")
    # Never echo the URL: it may hold a password.
    form = f"{name} must look like {scheme}://[[user]:password@]host[:port],host[:port][/db]"
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    sentinels = []
    try:
        for host in hosts.split(","):
            host = host.strip()
            if host.startswith("["):  # [::1]:26379
                address, _, port = host[1:].partition("]")
                port = port.removeprefix(":")
            else:
                address, _, port = host.partition(":")
            if not address:
                raise ValueError(host)
            sentinels.append((address, int(port) if port else SENTINEL_PORT))
        db = int(parts.path.strip("/") or 0)
    except ValueError:
        raise SettingError(form) from None
    if parts.query or parts.fragment:
        raise SettingError(form)
    return Target(url=url, tls=scheme == "sentinels", sentinels=tuple(sentinels), db=db,
                  username=unquote(username) or None, password=unquote(password) or None)


_warned = False


def tls_options(settings: Settings) -> dict:
    """redis-py's (and kombu's) SSL connection keywords for the settings."""
    global _warned
    options = {"ssl_ca_certs": settings.redis_tls_ca_file, "ssl_certfile": settings.redis_tls_cert_file,
               "ssl_keyfile": settings.redis_tls_key_file}
    if settings.redis_tls_verify:
        return {**options, "ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if not _warned:
        _warned = True
        log.warning("REDIS_TLS_VERIFY=false: Redis's TLS certificate is not checked; anyone on the path can "
                    "read and change the queue")
    return {**options, "ssl_cert_reqs": "none", "ssl_check_hostname": False}


def _socket_options(settings: Settings, target: Target) -> dict:
    """What the sentinels and Redis share: the timeouts, and TLS."""
    timeout_s = settings.enqueue_timeout_s
    options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if target.tls:
        options.update(ssl=True, **tls_options(settings))
    return options


def sentinel_options(settings: Settings, target: Target) -> dict:
    """Keywords for the connections to the sentinels (redis-py's and kombu's `sentinel_kwargs`). The
    URL's password is Redis's; the sentinels get REDIS_SENTINEL_PASSWORD, or none when it is unset."""
    options = _socket_options(settings, target)
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password
    return options


def connection_options(settings: Settings, target: Target) -> dict:
    """Keywords for each connection to Redis itself: the timeouts and TLS and, behind sentinels
    (whose URL is not handed to redis-py), the database and credentials of the URL. Not built on
    sentinel_options: the sentinels' password is theirs, and must not reach Redis."""
    options = _socket_options(settings, target)
    if target.sentinels:
        options.update(db=target.db, username=target.username, password=target.password)
    return options


def client(settings: Settings, url: str) -> redis.Redis:
    """A new redis-py client for the Redis behind `url`: the master that the sentinels name, for a
    sentinel URL, looked up again on every new connection (so after a failover too)."""
    import redis  # here, not above: the settings parse URLs with this module, in gunicorn's master too,
    from redis.sentinel import Sentinel  # which must not import ssl before gevent patches it

    target = parse_url(url)
    options = connection_options(settings, target)
    if not target.sentinels:
        if not target.tls:
            return redis.Redis.from_url(url, **options)
        # ssl=True is implied by the scheme; from_url takes the ssl_* keywords for the SSL connection.
        options.pop("ssl")
        return redis.Redis.from_url(url, **options)
    sentinels = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options(settings, target))
    return sentinels.master_for(settings.redis_sentinel_master, **options)


def kombu_broker(settings: Settings, url: str) -> tuple[str, dict | None, dict]:
    """(the broker URL kombu reads, its `broker_use_ssl`, its extra transport options) for `url`."""
    target = parse_url(url)
    use_ssl = tls_options(settings) if target.tls else None
    if not target.sentinels:
        return url, use_ssl, {}
    auth = ""
    if target.username or target.password:
        auth = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    kombu_url = ";".join(f"sentinel://{auth}{host if ':' not in host else f'[{host}]'}:{port}/{target.db}"
                         for host, port in target.sentinels)
    return kombu_url, use_ssl, {"master_name": settings.redis_sentinel_master,
                                "sentinel_kwargs": sentinel_options(settings, target)}
