"""A per-host circuit breaker in Redis, shared by every callback worker.

After `threshold` consecutive failed attempts to a host, its circuit opens for `cooldown_s`:
deliveries to it wait instead of taking workers' time. When the cooldown ends one attempt goes
through (half-open); a success closes the circuit, a failure opens it again at once.
"""

from __future__ import annotations

import redis

FAILURES_KEY = "cfs:circuit:failures:{host}"
OPEN_KEY = "cfs:circuit:open:{host}"


class CircuitBreaker:
    def __init__(self, client: redis.Redis, threshold: int, cooldown_s: float):
        self.client, self.threshold, self.cooldown_s = client, threshold, cooldown_s

    def open_for_s(self, host: str) -> float:
        """Seconds until the host may be tried again; 0 when its circuit is closed."""
        remaining_ms = self.client.pttl(OPEN_KEY.format(host=host))
        return max(0, remaining_ms) / 1000

    def record_failure(self, host: str) -> bool:
        """Count a failure; True when this one opened the circuit."""
        key = FAILURES_KEY.format(host=host)
        with self.client.pipeline() as pipe:
            failures, _ = pipe.incr(key).expire(key, int(self.cooldown_s * 10) + 60).execute()
        if failures >= self.threshold:
            self.client.set(OPEN_KEY.format(host=host), failures, px=int(self.cooldown_s * 1000))
            return True
        return False

    def record_success(self, host: str) -> None:
        self.client.delete(FAILURES_KEY.format(host=host), OPEN_KEY.format(host=host))


IN_FLIGHT_KEY = "cfs:host-in-flight:{host}"


class HostLimiter:
    """At most `limit` attempts in flight to one host across all workers, so that a slow receiver
    holds a few worker threads, never all of them. A slot of a worker that died expires with
    `lease_s`."""

    def __init__(self, client: redis.Redis, limit: int, lease_s: float):
        self.client, self.limit, self.lease_s = client, limit, lease_s

    def acquire(self, host: str) -> bool:
        key = IN_FLIGHT_KEY.format(host=host)
        with self.client.pipeline() as pipe:
            count, _ = pipe.incr(key).expire(key, int(self.lease_s) + 1).execute()
        if count > self.limit:
            self.client.decr(key)
            return False
        return True

    def release(self, host: str) -> None:
        self.client.decr(IN_FLIGHT_KEY.format(host=host))
