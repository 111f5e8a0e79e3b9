"""The API's errors: each class declares its HTTP status and Twilio code; to_dict() renders it.
Under the service's root (shared/errors.py); api/app.py error_response() turns any exception into one."""

from __future__ import annotations

from shared.errors import ServiceError

MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


class ApiError(ServiceError):
    """Base: an error answered to the client in Twilio's JSON format."""

    status = 500
    code = 20500
    message = "Internal Server Error"
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": MORE_INFO.format(code=self.code),
            "status": self.status,
        }


class BadRequest(ApiError):
    """A parameter is missing or invalid; the message names it."""

    status, code, message = 400, 20001, "Invalid request"


class Unauthorized(ApiError):
    """Credentials are missing, malformed or wrong."""

    status, code, message = 401, 20003, "Authentication Error - invalid username or password"
    headers = (("WWW-Authenticate", 'Basic realm="Twilio API"'),)


class Forbidden(ApiError):
    """A Twilio webhook whose signature is missing, wrong, or from an account we do not know."""

    status, code, message = 403, 20403, "Forbidden: the request is not signed by a known account"


class NotFound(ApiError):
    """No such resource, or one the caller may not see (existence is not revealed)."""

    status, code = 404, 20404

    def __init__(self, path: str):
        super().__init__(f"The requested resource {path} was not found")


class MethodNotAllowed(ApiError):
    """The path exists but not with this method; Allow lists the ones it has."""

    status, code, message = 405, 20004, "Method not allowed"

    def __init__(self, allowed: list[str]):
        super().__init__()
        self.headers = (("Allow", ", ".join(sorted(allowed))),)


class RequestTimeout(ApiError):
    """The request body did not arrive within REQUEST_BODY_TIMEOUT_S."""

    status, code = 408, 20408

    def __init__(self, timeout_s: float):
        super().__init__(f"Request body not received within {timeout_s:g} seconds")


class PayloadTooLarge(ApiError):
    """The request body is over the configured cap."""

    status, code = 413, 20001

    def __init__(self, max_bytes: int):
        super().__init__(f"Request body is larger than the limit of {max_bytes} bytes")


class TooManyRequests(ApiError):
    """The account created summaries faster than its rate limit; Retry-After says when to try again."""

    status, code = 429, 20429

    def __init__(self, retry_after_s: int):
        super().__init__(f"Too many requests: try again in {retry_after_s} seconds")
        self.headers = (("Retry-After", str(retry_after_s)),)


class ServiceUnavailable(ApiError):
    """A dependency (PostgreSQL or Redis) cannot be reached."""

    status, code, message = 503, 20503, "Service Unavailable"
    # A pool that cannot reach PostgreSQL finds out per request: a few seconds apart is soon enough.
    headers = (("Retry-After", "5"),)


class DatabaseTimedOut(ServiceUnavailable):
    """The database cancelled a statement of the request that ran past DATABASE_STATEMENT_TIMEOUT_MS,
    nearly always waiting for a lock another transaction holds (a migration's, an operator's). Every
    request writes in one transaction (or one statement), which the cancel rolled back: nothing was
    changed, and the same request can simply be sent again."""

    message = "Service Unavailable: the database took too long and the request was rolled back; nothing was changed"
    # Retry-After 5, as its parent's: the lock waits to expect end within seconds (a migration gives a
    # lock up after its 5 s lock_timeout).


class InternalError(ApiError):
    """Anything unexpected: logged with its traceback, answered without one."""
