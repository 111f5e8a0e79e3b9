"""gunicorn settings for the API (`gunicorn -c python:api.gunicorn_conf api.wsgi:application`)."""

from shared.platform import metrics
from shared.platform.config import get_settings

# The largest request line gunicorn allows: the application's own, smaller limits answer first, in
# Twilio's format (api/app.py).
limit_request_line = 8190

# Our application logs one JSON line per request, with its request id; gunicorn's own lines are JSON too.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "pythonjsonlogger.json.JsonFormatter",
                            "fmt": "{asctime}{levelname}{name}{message}", "style": "{",
                            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                # The application's own `request` line replaces the access log: it has the request id.
                "gunicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False}},
}


def child_exit(server, worker):
    # A dead worker's live gauges must not be summed into the next scrape.
    metrics.process_exited(worker.pid)


def on_starting(server):
    """METRICS_PORT: listen there too, on the host of the first --bind; the application answers only
    /metrics and /healthz on that port, and no /metrics on the public one."""
    port = get_settings().metrics_port
    if port:
        host = server.cfg.bind[0].rsplit(":", 1)[0] if ":" in server.cfg.bind[0] else "127.0.0.1"
        server.cfg.set("bind", [*server.cfg.bind, f"{host}:{port}"])
