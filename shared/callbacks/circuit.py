"""Admission of a callback attempt, shared by every callback worker through Redis: a circuit
breaker per account and destination, and attempt slots per destination and per account family.
The workers admit attempts through it; operators close a circuit through it
(shared/operator/actions.py).

Both are keyed by the address actually resolved (worker/ssrf.py), not the URL's host text, so
`0x7f000004` and a thousand wildcard names for one server are one destination; and the breaker
is per account too, so one account's failing receiver never opens the circuit for another's.
"""

from __future__ import annotations

import redis

FAILURES_KEY = "cfs:circuit:failures:{key}"
OPEN_KEY = "cfs:circuit:open:{key}"
PROBE_KEY = "cfs:circuit:probe:{key}"


# The circuit's rules, once, in Lua: CircuitBreaker runs them alone, Admission together with the
# slots (one round trip before an attempt, one after). Keys: open (its TTL is the cooldown left),
# failures (consecutive), probe (the one half-open attempt's lease).
_CIRCUIT = """
-- 0 when an attempt may go now (closed, or the caller took the half-open probe); else ms to wait.
local function circuit_wait(open, failures, probe, threshold, probe_lease_ms)
  local open_ms = redis.call('PTTL', open)
  if open_ms > 0 then return open_ms end
  if tonumber(redis.call('GET', failures) or '0') < tonumber(threshold) then return 0 end
  if redis.call('SET', probe, 1, 'NX', 'PX', probe_lease_ms) then return 0 end
  return math.max(1000, redis.call('PTTL', probe))
end
-- Count an outcome ('failure' | 'success' | 'none': says nothing of the receiver); 1 when the
-- circuit is (again) open after it.
local function circuit_record(open, failures, probe, outcome, threshold, cooldown_ms, failures_expiry_s)
  if outcome == 'success' then
    redis.call('DEL', open, failures, probe)
  elseif outcome == 'failure' then
    local count = redis.call('INCR', failures)
    redis.call('EXPIRE', failures, failures_expiry_s)
    if count >= tonumber(threshold) then
      redis.call('SET', open, count, 'PX', cooldown_ms)
      redis.call('DEL', probe)
      return 1
    end
  end
  return 0
end
"""
_WAIT = _CIRCUIT + "return circuit_wait(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])"
_RECORD = _CIRCUIT + "return circuit_record(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])"


class CircuitBreaker:
    """After `threshold` consecutive failed attempts, the circuit opens for `cooldown_s`: attempts
    wait instead of taking workers' time. Then it is half-open: exactly one attempt (the probe) goes
    through; a success closes the circuit, a failure opens it again."""

    def __init__(self, client: redis.Redis, threshold: int, cooldown_s: float, probe_lease_s: float):
        self.client, self.threshold, self.cooldown_s = client, threshold, cooldown_s
        self.probe_lease_ms = int(probe_lease_s * 1000)
        self._wait = client.register_script(_WAIT)
        self._record = client.register_script(_RECORD)

    @staticmethod
    def keys(key: str) -> list[str]:
        return [OPEN_KEY.format(key=key), FAILURES_KEY.format(key=key), PROBE_KEY.format(key=key)]

    def record_args(self, outcome: str | None) -> list:
        """circuit_record's arguments after the keys, for `outcome` (None: says nothing)."""
        return [outcome or "none", self.threshold, max(1, int(self.cooldown_s * 1000)), int(self.cooldown_s * 10) + 60]

    def wait_s(self, key: str) -> float:
        """0 when an attempt may go now (closed, or this caller holds the half-open probe); otherwise
        how long to wait before asking again."""
        return int(self._wait(keys=self.keys(key), args=[self.threshold, self.probe_lease_ms])) / 1000

    def record_failure(self, key: str) -> bool:
        """Count a failure; True when the circuit is (again) open after it."""
        return bool(int(self._record(keys=self.keys(key), args=self.record_args("failure"))))

    def record_success(self, key: str) -> None:
        self._record(keys=self.keys(key), args=self.record_args("success"))

    def close(self, key: str) -> bool:
        """Close the circuit at once (an operator who knows the receiver is back): its failures are
        forgotten and the next attempt goes through. True when it was open or counting failures."""
        return bool(self.client.delete(*self.keys(key)))

    def is_open(self, key: str) -> bool:
        return self.client.pttl(OPEN_KEY.format(key=key)) > 0


SLOTS_KEY = "cfs:slots:{key}"
# Each holder is a member scored by its own expiry (Redis time, ms): expired holders are dropped
# before counting, so a slot of a worker that died frees itself, and a live holder's never expires
# early. All the sets are checked, then all taken, in one script: never half-acquired.
# Slot keys are KEYS[first..], the limit of KEYS[i] is ARGV[i + offset]; ARGV[1] the lease, ARGV[2] the holder.
_TAKE_SLOTS = """
local function take_slots(first, offset)
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local lease_ms = tonumber(ARGV[1])
  for i = first, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_ms)
    if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[i + offset]) then return i - first + 1 end
  end
  for i = first, #KEYS do
    redis.call('ZADD', KEYS[i], now_ms + lease_ms, ARGV[2])
    redis.call('PEXPIRE', KEYS[i], lease_ms)
  end
  return 0
end
"""
_ACQUIRE = _TAKE_SLOTS + "return take_slots(1, 2)"


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


# One round trip before an attempt: clear the message's in-flight marker, ask the circuit and take
# the slots (as Slots.acquire). KEYS: marker, open, failures, probe, then the slot sets; ARGV: slot
# lease, holder, threshold, probe lease, then the slot limits (ARGV[i] for KEYS[i]). Returns
# {wait_ms, full}: wait_ms > 0 when the circuit says wait; full > 0 names the slot set (1-based) that was full.
_ADMIT = _CIRCUIT + _TAKE_SLOTS + """
redis.call('DEL', KEYS[1])
local wait_ms = circuit_wait(KEYS[2], KEYS[3], KEYS[4], ARGV[3], ARGV[4])
if wait_ms > 0 then return {wait_ms, 0} end
return {0, take_slots(5, 0)}
"""

# One round trip after an attempt: give the slots back (KEYS[4..]) and record the outcome.
# KEYS: open, failures, probe, slot sets; ARGV: holder, then circuit_record's arguments.
_FINISH = _CIRCUIT + """
for i = 4, #KEYS do redis.call('ZREM', KEYS[i], ARGV[1]) end
return circuit_record(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
"""


class Admission:
    """The circuit and the slots of one attempt in two round trips (admit, finish) instead of six:
    the same keys and rules as CircuitBreaker and Slots, so either may look at what the other did."""

    def __init__(self, breaker: CircuitBreaker, slots: Slots):
        self.breaker, self.slots = breaker, slots
        self._admit = slots.client.register_script(_ADMIT)
        self._finish = slots.client.register_script(_FINISH)

    def admit(self, marker: str, destination: str, token: str, limits: dict[str, int]) -> tuple[float, str | None]:
        """Delete `marker`; then (seconds to wait, None) when the circuit says wait (as wait_s), else
        (0, None) with a slot under every key taken for `token`, or (0, the key that was full)."""
        keys = [marker, *self.breaker.keys(destination), *(SLOTS_KEY.format(key=key) for key in limits)]
        wait_ms, full = self._admit(keys=keys, args=[self.slots.lease_ms, token, self.breaker.threshold,
                                                     self.breaker.probe_lease_ms, *limits.values()])
        if int(wait_ms) > 0:
            return int(wait_ms) / 1000, None
        return 0, None if int(full) == 0 else list(limits)[int(full) - 1]

    def finish(self, destination: str, token: str, slot_keys: list[str], outcome: str | None) -> bool:
        """Release the slots; record `outcome` ('failure', 'success' or None: says nothing of the
        receiver). True when the circuit is (again) open after it."""
        keys = [*self.breaker.keys(destination), *(SLOTS_KEY.format(key=key) for key in slot_keys)]
        return bool(int(self._finish(keys=keys, args=[token, *self.breaker.record_args(outcome)])))
