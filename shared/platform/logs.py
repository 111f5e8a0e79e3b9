"""Logging for every process: one JSON object per line, with the request, account, summary and task
it is about. Context comes from contextvars set where a request or a job starts (bind())."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys

from pythonjsonlogger.json import JsonFormatter

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


def configure_logging(level: str = "INFO") -> None:
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                       rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    handler.addFilter(_ContextFilter())
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for existing in list(root.handlers):
        # Ours from an earlier call, or a plain default one; others (a test's capture) stay.
        if existing.get_name() == HANDLER_NAME or type(existing) is logging.StreamHandler:
            root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
