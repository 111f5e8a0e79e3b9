"""Per-account rate limits of summary creates and of feedback posts, counted in Redis so that they
hold across every API process and machine (the `limits` library's moving window, one Lua call per
check)."""

from __future__ import annotations

import logging
import math
import time

from limits import parse_many
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from api.errors import TooManyRequests
from shared.platform import redis_connect
from shared.platform.config import Settings
from shared.platform.redis_outage import LATCH, RedisDown

log = logging.getLogger(__name__)


class RateLimit:
    """`what` ("create", "feedback") names the windows: each kind of request has its own. Creates
    count in moving windows (exact; Redis keeps a member per create, and creates are few); feedback,
    which comes once per call at a contact centre's pace, in fixed windows: a counter per window
    instead of a member per post (up to 6,000 a minute an account), at the price of a burst of up
    to twice the limit across a window's edge."""

    def __init__(self, redis_url: str, settings: Settings, what: str = "create", rates: str | None = None,
                 fixed_windows: bool = False):
        self.what = what
        self.items = parse_many(rates or settings.create_rate_limit)
        # A client of the project's own making (TLS, Sentinel), for the same Redis as the queue: limits'
        # redis+sentinel storage would read the windows from replicas and send Redis's password to the
        # sentinels (this client sends them REDIS_SENTINEL_PASSWORD); the URL given here only tells
        # limits it is Redis.
        pool = redis_connect.client(settings, redis_url).connection_pool
        storage = RedisStorage("redis://", connection_pool=pool)
        self.limiter = (FixedWindowRateLimiter if fixed_windows else MovingWindowRateLimiter)(storage)

    def check(self, account_sid: str) -> None:
        """Count one request; raise TooManyRequests when a window is full. Redis being down does not
        stop creates or feedback (they are accepted while Redis is down), so the limit fails open then."""
        try:
            retry_after_s = LATCH.call(self._retry_after_s, account_sid)
        except RedisDown:
            return
        except Exception:
            log.warning("rate limit unavailable; letting the %s through", self.what, exc_info=True)
            return
        if retry_after_s is not None:
            raise TooManyRequests(retry_after_s)

    def _retry_after_s(self, account_sid: str) -> int | None:
        """Count one request in every window; the seconds until the first full one frees, or None."""
        for item in self.items:
            if not self.limiter.hit(item, self.what, account_sid):
                reset_at = self.limiter.get_window_stats(item, self.what, account_sid).reset_time
                return max(1, math.ceil(reset_at - time.time()))
        return None
