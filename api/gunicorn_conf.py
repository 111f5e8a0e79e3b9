"""gunicorn settings for the API (`gunicorn -c python:api.gunicorn_conf api.wsgi:application`).

Slow clients must not occupy the server. Sync and threaded workers give each connection a worker
or a thread while it sends its headers, with no deadline: four connections dripping one byte every
2 s kept /healthz unanswered. gevent workers hold a connection in a greenlet instead, a thousand per
process, and read the request line and headers under a deadline (gunicorn's `keepalive` is that
deadline for the gevent worker); the application reads the body under its own (api/http.py).

Nothing here may import psycopg (nor SQLAlchemy's engine): psycopg cooperates with gevent only when
it is first imported after the worker has patched the standard library, so never run with --preload.
"""

import sys

from shared.platform import logs, metrics
from shared.platform.config import check_or_exit, get_settings

# In the master, before any worker: a bad setting stops the server with one line, not a worker
# crash loop of tracebacks. The API checks signatures with the stored tokens, hence the keys.
check_or_exit("web")

worker_class = "gevent"
worker_connections = 1000  # per process: slow clients cost a greenlet each, not a worker
# gevent worker: the whole request line and headers must arrive within this (and an idle keep-alive
# connection is closed after it). Must be > 0: at 0 gunicorn reads headers with no deadline at all.
keepalive = get_settings().request_header_timeout_s

# The largest request line gunicorn allows: the application's own, smaller limits answer first, in
# Twilio's format (api/app.py).
limit_request_line = 8190

# Our application logs one line per request, with its request id; gunicorn's own lines take the same
# format (LOG_FORMAT: JSON, or text for a person at a terminal).
logconfig_dict = logs.gunicorn_logconfig("INFO", get_settings().log_format)

# gunicorn 27 opens a control socket at one path per user (~/.gunicorn/gunicorn.ctl): a second master
# on the machine (another checkout, the bench's baselines) takes it over from the first. Nothing here
# uses it; every master does without.
control_socket_disable = True


def child_exit(server, worker):
    # A dead worker's live gauges must not be summed into the next scrape.
    metrics.process_exited(worker.pid)


def metrics_bind(first_bind: str, port: int) -> str:
    """The metrics listener: the first bind's host on METRICS_PORT; loopback when the API listens on
    a unix socket or an inherited descriptor (behind a proxy on the same machine). `unix:9464`
    would have been a unix socket named 9464."""
    first_bind = first_bind.removeprefix("tcp://")
    if first_bind.startswith(("unix:", "fd://")) or "/" in first_bind:
        return f"127.0.0.1:{port}"
    host = first_bind.rsplit(":", 1)[0] if first_bind.rsplit(":", 1)[-1].isdigit() else first_bind
    return f"{host or '127.0.0.1'}:{port}"


def on_starting(server):
    """METRICS_PORT: listen there too (metrics_bind); the application answers only /metrics and
    /healthz on that listener, and no /metrics on the public one, deciding by the socket a request
    came in on (api/app.py listener_port)."""
    port = get_settings().metrics_port
    if not port:
        return

    def add_metrics_bind() -> None:
        binds = server.app.cfg.bind
        metrics = metrics_bind(binds[0], port)
        if metrics not in binds:
            server.app.cfg.set("bind", [*binds, metrics])

    if metrics_bind(server.cfg.bind[0], port) in [bind.removeprefix("tcp://") for bind in server.cfg.bind]:
        # The API's own listener: /metrics would be refused on the one port the API has.
        print(f"summaries web: configuration: METRICS_PORT {port} is the API's own port; choose another",
              file=sys.stderr, flush=True)
        raise SystemExit(2)
    add_metrics_bind()
    # A reload (SIGHUP) reads the configuration again, with one bind: gunicorn then closed both
    # listeners and failed to open them again ("Address already in use"), and the master exited.
    # Added again before gunicorn compares the addresses, the listeners stay as they are.
    reload = server.app.reload

    def reload_keeping_the_metrics_listener() -> None:
        reload()
        add_metrics_bind()

    server.app.reload = reload_keeping_the_metrics_listener


def post_worker_init(worker):
    """Refuse to serve if psycopg was imported before gevent patched this worker: its C wait
    function would then block the whole process on every query."""
    import psycopg.waiting

    if worker_class == "gevent" and psycopg.waiting.wait.__name__ == "wait_c":
        raise RuntimeError("psycopg was imported before gevent patched the worker (is --preload set?)")
