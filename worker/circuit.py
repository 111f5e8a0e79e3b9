"""Admission of a callback attempt, shared by every callback worker through Redis: a circuit
breaker per account and destination, and attempt slots per destination and per account.

Both are keyed by the address actually resolved (worker/ssrf.py), not the URL's host text, so
`0x7f000004` and a thousand wildcard names for one server are one destination; and the breaker
is per account too, so one account's failing receiver never opens the circuit for another's.
"""

from __future__ import annotations

import redis

FAILURES_KEY = "cfs:circuit:failures:{key}"
OPEN_KEY = "cfs:circuit:open:{key}"
PROBE_KEY = "cfs:circuit:probe:{key}"


class CircuitBreaker:
    """After `threshold` consecutive failed attempts, the circuit opens for `cooldown_s`: attempts
    wait instead of taking workers' time. Then it is half-open: exactly one attempt (the probe) goes
    through; a success closes the circuit, a failure opens it again."""

    def __init__(self, client: redis.Redis, threshold: int, cooldown_s: float, probe_lease_s: float):
        self.client, self.threshold, self.cooldown_s = client, threshold, cooldown_s
        self.probe_lease_ms = int(probe_lease_s * 1000)

    def wait_s(self, key: str) -> float:
        """0 when an attempt may go now (closed, or this caller holds the half-open probe); otherwise
        how long to wait before asking again."""
        open_ms = self.client.pttl(OPEN_KEY.format(key=key))
        if open_ms > 0:
            return open_ms / 1000
        failures = int(self.client.get(FAILURES_KEY.format(key=key)) or 0)
        if failures < self.threshold:
            return 0
        if self.client.set(PROBE_KEY.format(key=key), 1, nx=True, px=self.probe_lease_ms):
            return 0  # the one half-open attempt
        return max(1.0, self.client.pttl(PROBE_KEY.format(key=key)) / 1000)

    def record_failure(self, key: str) -> bool:
        """Count a failure; True when the circuit is (again) open after it."""
        failures_key = FAILURES_KEY.format(key=key)
        with self.client.pipeline() as pipe:
            failures, _ = pipe.incr(failures_key).expire(failures_key, int(self.cooldown_s * 10) + 60).execute()
        if failures < self.threshold:
            return False
        with self.client.pipeline() as pipe:
            pipe.set(OPEN_KEY.format(key=key), failures, px=max(1, int(self.cooldown_s * 1000)))
            pipe.delete(PROBE_KEY.format(key=key)).execute()
        return True

    def record_success(self, key: str) -> None:
        self.client.delete(FAILURES_KEY.format(key=key), OPEN_KEY.format(key=key), PROBE_KEY.format(key=key))


SLOTS_KEY = "cfs:slots:{key}"
# Each holder is a member scored by its own expiry (Redis time, ms): expired holders are dropped
# before counting, so a slot of a worker that died frees itself, and a live holder's never expires
# early. All the sets are checked, then all taken, in one script: never half-acquired.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease_ms = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now_ms + lease_ms, ARGV[2])
  redis.call('PEXPIRE', key, lease_ms)
end
return 0
"""


class Slots:
    """A leased semaphore per key: at most `limit` attempts in flight per destination and per
    account across all workers. A slow or hanging receiver holds a few threads, never all of them,
    and one account's receivers never hold back another's callbacks."""

    def __init__(self, client: redis.Redis, lease_s: float):
        self.client, self.lease_ms = client, int(lease_s * 1000)
        self._acquire = client.register_script(_ACQUIRE)

    def acquire(self, token: str, limits: dict[str, int]) -> str | None:
        """Take a slot under every key for `token`; None when taken, else the key that was full."""
        keys = [SLOTS_KEY.format(key=key) for key in limits]
        full = int(self._acquire(keys=keys, args=[self.lease_ms, token, *limits.values()]))
        return None if full == 0 else list(limits)[full - 1]

    def release(self, token: str, keys: list[str]) -> None:
        with self.client.pipeline() as pipe:
            for key in keys:
                pipe.zrem(SLOTS_KEY.format(key=key), token)
            pipe.execute()
