"""The base of every task (`@app.task(base=Task)`): a transient database error (PostgreSQL restarting,
a pool timeout, a statement cut by its timeout; shared.platform.db.TRANSIENT_ERRORS) is retried
retry_policy's way, MAX_TRANSIENT_RETRIES times with its backoff; then the task's own
`on_retries_exhausted` says what becomes of the work (the compute task fails the summary; a callback
is left pending for the sweeper). Periodic tasks set `transient_retries = 0`: their next run is the
retry. Log lines carry the task id, and the summary's SID for tasks about one summary.
"""

from __future__ import annotations

import logging

import celery

from shared.platform import logs
from shared.platform.db import TRANSIENT_ERRORS
from worker.retry_policy import MAX_TRANSIENT_RETRIES, transient_delay_s

log = logging.getLogger(__name__)


class Task(celery.Task):
    transient_retries = MAX_TRANSIENT_RETRIES
    # Celery's own count: its default, 3, would stop the retries before retry_policy's.
    max_retries = MAX_TRANSIENT_RETRIES
    about_a_summary = False  # the first argument is a summary's SID: every log line names it

    def __call__(self, *args, **kwargs):
        summary_sid = args[0] if self.about_a_summary and args else None
        with logs.bind(summary_sid=summary_sid, task_id=self.request.id):
            try:
                return super().__call__(*args, **kwargs)
            except TRANSIENT_ERRORS as exc:
                if self.request.retries >= self.transient_retries:
                    return self.on_retries_exhausted(exc, *args, **kwargs)
                countdown = transient_delay_s(self.request.retries)
                log.warning("transient database error; retrying in %.1fs", countdown)
                raise self.retry(exc=exc, countdown=countdown, max_retries=self.transient_retries) from None

    def on_retries_exhausted(self, exc: Exception, *args, **kwargs) -> None:
        """Still a transient error after the last retry: by default left to the sweeper (or the next run)."""
        log.warning("database unavailable after %d retries; left to the sweeper or the next run: %s",
                    self.request.retries, type(exc).__name__)
