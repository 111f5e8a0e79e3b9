"""gunicorn settings for the console (`gunicorn -c python:console.gunicorn_conf console.wsgi:application`).

gevent workers, as the API's (api/gunicorn_conf.py says why): a client that sends its request a byte
at a time holds a greenlet, not one of a few threads (eight half-sent requests stopped a threaded
console, found by review), and must send its headers within REQUEST_HEADER_TIMEOUT_S. A bulk
redelivery streams its progress for as long as it takes, waiting between sends cooperatively; the
worker keeps telling the master it lives, so gunicorn's timeout never cuts it. The console listens
where only operators reach it (loopback, or behind their proxy), never on the API's public port.

Nothing here may import psycopg (nor SQLAlchemy's engine): never run it with --preload.
"""

from console.checks import check_console_settings
from shared.platform import logs
from shared.platform.config import check_or_exit, get_settings

check_console_settings(check_or_exit("console"))

worker_class = "gevent"
worker_connections = 1000
keepalive = get_settings().request_header_timeout_s  # the gevent worker's deadline for a request's headers
limit_request_line = 8190
logconfig_dict = logs.gunicorn_logconfig("INFO", get_settings().log_format)
# One control socket path per user (gunicorn 27): `web` and `console` on one machine would share it;
# neither uses it (as api/gunicorn_conf.py).
control_socket_disable = True


def post_worker_init(worker):
    """Refuse to serve if psycopg was imported before gevent patched this worker (as the API does)."""
    import psycopg.waiting

    if psycopg.waiting.wait.__name__ == "wait_c":
        raise RuntimeError("psycopg was imported before gevent patched the worker (is --preload set?)")
