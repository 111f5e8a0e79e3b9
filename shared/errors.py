"""Every error the service raises on purpose, under one root: a front end catches ServiceError once
(the CLI prints its message in one line, exit status 2; the API maps it to a Twilio error in
api/app.py). Each class says in one line when it is raised. The API's own HTTP errors (api/errors.py)
derive from the root too. Errors of libraries (SQLAlchemy, redis, requests) are not wrapped here:
where one is expected, the code that expects it says what it means.
"""

from __future__ import annotations


class ServiceError(Exception):
    """The root: raised for a request, a command or a setting that cannot be done as asked."""


class SettingError(ServiceError, ValueError):
    """An environment variable holds a missing or bad value; the message names the variable."""


class EmbeddedUnavailable(ServiceError, RuntimeError):
    """An embedded PostgreSQL or Redis is needed (no DATABASE_URL/REDIS_URL) but cannot be started or found."""


class IllegalTransition(ServiceError, ValueError):
    """Code asked for a summary status or delivery state change that the lifecycle's table does not allow."""


class AccountError(ServiceError, ValueError):
    """An account cannot be created or its tokens changed as asked (bad SID, unknown parent, no secondary)."""


class ImportFailed(ServiceError, ValueError):
    """A CSV file (or a page of Twilio's Calls API) cannot be loaded; the message names the line."""

    def __init__(self, line: int | None, message: str):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class ActionRefused(ServiceError, ValueError):
    """An operator's action is asked in a way it cannot be done: it names nothing, or two ways at once."""


class MigrationBlocked(ServiceError):
    """A revision kept timing out on a lock: another transaction holds it for longer than the retries last."""


class CommandError(ServiceError):
    """A command cannot do what was asked; printed without a traceback."""


class RedisDown(ServiceError):
    """Not tried: Redis failed moments ago (shared/platform/redis_outage.py), so the call was skipped."""


class ForbiddenAddress(ServiceError):
    """A callback's connection reached an address it may not reach. Deliberately not an OSError: urllib3
    and requests would wrap it as a connection error, which is retried; this is final."""
