"""Wire the application to this process's database and broker, from the settings."""

from __future__ import annotations

from api.app import App, Services
from api.ratelimit import RateLimit
from shared.platform import queue
from shared.platform.config import Settings, get_settings
from shared.platform.db import get_sessionmaker
from shared.platform.logs import configure_logging


def create_app(settings: Settings | None = None) -> App:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)

    create_limit = RateLimit(queue.broker_url(settings), settings)
    feedback_limit = RateLimit(queue.broker_url(settings), settings, "feedback", settings.feedback_rate_limit,
                               fixed_windows=True)
    return App(Services(
        settings=settings,
        sessions=get_sessionmaker(),
        enqueue_summary=queue.enqueue_summary,
        # The client the enqueue itself uses: /readyz checks the connection that creates depend on.
        ping_redis=lambda: queue.get_redis().ping(),
        check_create_rate=create_limit.check,
        check_feedback_rate=feedback_limit.check,
    ))
