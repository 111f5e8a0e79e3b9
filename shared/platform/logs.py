"""Logging for every process: one JSON object per line, with the request, account, summary and task
it is about. Context comes from contextvars set where a request or a job starts (bind()).

LOG_FORMAT=text is for a person at a terminal (`summaries up` chooses it there): one short line per
event, `HH:MM:SS [LEVEL ]message key=value...`, the level shown only when it is not INFO, and the
routine lines a person does not read left out (each task received and succeeded, beat sending its
periodic tasks, mingle, health checks). Warnings, errors and our own lines all stay.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import time

from pythonjsonlogger.json import JsonFormatter

from shared.safe_text import safe

_context: contextvars.ContextVar[dict] = contextvars.ContextVar("log_context", default={})
HANDLER_NAME = "call-feedback-summaries-json"


@contextlib.contextmanager
def bind(**values):
    """Every log line inside carries these fields (None values are left out)."""
    token = _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def add(**values) -> None:
    """Add fields to the current context, for the rest of it (e.g. the account, once authenticated)."""
    _context.set({**_context.get(), **{k: v for k, v in values.items() if v is not None}})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time, not the one it was created with: a handler
    that outlives a replaced stream (pytest's capture, at exit) must not write to a closed file."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
# Left out of a text line: Celery's copy of what its message already says; and, on an INFO line, the
# request id (a warning or an error keeps it: it is the Twilio-Request-Id the client was answered).
_NOT_SHOWN = {"data", "color_message"}


class TextFormatter(logging.Formatter):
    """`16:01:33 message key=value`: a record's extra fields after its message, in the order given."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        hidden = _NOT_SHOWN | ({"request_id"} if record.levelno <= logging.INFO else set())
        # safe(): a field may hold what a client sent (a path): no newline or escape code of its own.
        fields = " ".join(f"{name}={safe(value)}" for name, value in vars(record).items()
                          if name not in _STANDARD and name not in hidden and not name.startswith("_"))
        message = " ".join(record.getMessage().split())  # one line, whatever the message held
        line = f"{time.strftime('%H:%M:%S', time.localtime(record.created))} {level}{message}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


class RoutineFilter(logging.Filter):
    """Drops the INFO lines that repeat every second or say what another line already says."""

    QUIET_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.worker.consumer.mingle")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        if record.name in self.QUIET_LOGGERS:
            return False
        if record.name == "celery.beat" and str(record.msg).startswith("Scheduler: Sending due task"):
            return False
        return not (record.name == "api.app" and getattr(record, "route", None) == "/healthz")


LOG_FORMATS = ("json", "text")


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return TextFormatter()
    return JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


def gunicorn_logconfig(level: str, log_format: str) -> dict:
    """gunicorn's logconfig_dict: its own lines in the same format as ours (its access log off: the
    application's `request` line replaces it, with the request id)."""
    filters = {"routine": {"()": RoutineFilter}} if log_format == "text" else {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {"ours": {"()": formatter, "log_format": log_format}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "ours", "stream": "ext://sys.stderr",
                                "filters": list(filters)}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                    "gunicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False}},
    }


def configure_logging(level: str = "INFO", log_format: str = "json") -> None:
    handler = _StderrHandler()
    handler.setFormatter(formatter(log_format))
    if log_format == "text":
        handler.addFilter(RoutineFilter())
    handler.addFilter(_ContextFilter())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for existing in list(root.handlers):
        # Ours from an earlier call, or a plain default one; others (a test's capture) stay.
        if existing.get_name() == HANDLER_NAME or type(existing) is logging.StreamHandler:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Text: a library's warning is a log line like any other (py.warnings, WARNING), not a raw block.
    logging.captureWarnings(log_format == "text")
