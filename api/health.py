"""Liveness (the process answers) and readiness (PostgreSQL answers; Redis is named when it does not)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from api.errors import ServiceUnavailable
from api.http import Request, Response


def healthz(request: Request) -> Response:
    return Response(200, {"status": "ok"})


def readyz(request: Request) -> Response:
    """Ready while PostgreSQL answers. Without Redis the API still accepts every summary (stored, then
    sent by the sweeper once Redis is back): a load balancer must keep it, so Redis down is
    "degraded", answered 200, for monitoring to see and routing to ignore."""
    try:
        request.session.execute(text("SELECT 1"))
    except Exception:
        raise ServiceUnavailable("Service Unavailable: PostgreSQL not reachable") from None
    try:
        request.services.ping_redis()
    except Exception:
        return Response(200, {"status": "degraded", "postgresql": "ok", "redis": "unreachable"})
    return Response(200, {"status": "ok", "postgresql": "ok", "redis": "ok"})


def metrics(request: Request) -> Response:
    """Prometheus exposition: every API and worker process on this machine, and the live state."""
    from shared.platform.metrics import exposition

    body, content_type = exposition()
    return Response(200, raw=body, content_type=content_type)


OPENAPI_DOCUMENT = (Path(__file__).with_name("openapi.json")).read_bytes()


def openapi(request: Request) -> Response:
    """The service's OpenAPI document: what it accepts and answers, errors included."""
    return Response(200, raw=OPENAPI_DOCUMENT)
