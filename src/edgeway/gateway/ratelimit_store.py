"""Token buckets for rate limits: in this process's memory, or in Redis shared by many gateways.

A bucket holds up to ``capacity`` tokens and refills at ``rate`` tokens per second; a request
takes one token or is refused. Both stores answer the same :class:`Take`, from which the limit
headers are derived.

The Redis store runs one Lua script per request (atomic: two gateways never both take the last
token), timed by Redis's own clock so the gateways' clocks need not agree. When Redis fails (down,
slow past ``timeout``), the store reports the outage once in the log, counts every request
decided without it (``unavailable``), and skips Redis for ``retry_interval`` so an outage does not
add a timeout to each request; the filter then lets requests through (fail open, the default) or
refuses them with 503 (``on_store_error: deny``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeway.gateway.config.security_schema import RateLimitStore
from edgeway.gateway.errors import GatewayError

log = logging.getLogger("edgeway.gateway.ratelimit")


@dataclass(frozen=True, slots=True)
class Take:
    """The outcome of taking a token from a bucket."""

    allowed: bool
    tokens: float  # left after this request
    capacity: int
    rate: float  # tokens per second

    @property
    def remaining(self) -> int:
        return max(0, math.floor(self.tokens))

    @property
    def retry_after(self) -> float:
        """Seconds until one token is available (0 when one is)."""
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    @property
    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.tokens) / self.rate)


def refill(tokens: float, elapsed: float, capacity: int, rate: float) -> tuple[bool, float]:
    """The token bucket step: refill for ``elapsed`` seconds, then try to take one."""
    tokens = min(float(capacity), tokens + max(0.0, elapsed) * rate)
    if tokens >= 1:
        return True, tokens - 1
    return False, tokens


class MemoryBuckets:
    """Buckets of this process, the least recently used dropped beyond ``max_keys``."""

    def __init__(self, max_keys: int = 100_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.unavailable = 0  # never: the interface is the Redis store's
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._buckets.clear()

    async def take(self, key: str, capacity: int, rate: float) -> Take | None:
        now = self._clock()
        buckets = self._buckets
        found = buckets.get(key)
        if found is None:
            allowed, tokens = refill(capacity, 0.0, capacity, rate)
            if len(buckets) >= self.max_keys:
                buckets.popitem(last=False)
        else:
            allowed, tokens = refill(found[0], now - found[1], capacity, rate)
            buckets.move_to_end(key)
        buckets[key] = (tokens, now)
        return Take(allowed, tokens, capacity, rate)


# KEYS[1] the bucket; ARGV capacity, rate (tokens/s). Returns {allowed, tokens as a string}: a Lua
# number in a reply would be truncated to an integer.
TAKE_SCRIPT = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - tokens) / rate * 1000) + 1000)
return {allowed, tostring(tokens)}
"""


class RedisBuckets:
    """Buckets in Redis, shared by every gateway using the same ``key_prefix``."""

    def __init__(self, config: RateLimitStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = config.redis_url
        self.prefix = config.key_prefix
        self.timeout = float(config.timeout)
        self.retry_interval = float(config.retry_interval)
        self.unavailable = 0  # requests decided without Redis (the metric of an outage)
        self.failures = 0  # failed Redis calls
        self._clock = clock
        self._down_until = 0.0
        self._down = False
        self._client: aioredis.Redis[bytes] | None = None
        self._script: object | None = None

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self._script = self._client.register_script(TAKE_SCRIPT)
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            # Not fatal: the gateway serves (failing open or closed) and retries Redis as it goes.
            self._failed(exc)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # type: ignore[attr-defined]  # types-redis predates aclose
            self._client = None

    async def take(self, key: str, capacity: int, rate: float) -> Take | None:
        """The bucket's answer, or None when Redis cannot give one now."""
        if self._down and self._clock() < self._down_until:
            self.unavailable += 1
            return None
        script = self._script
        if script is None:
            raise GatewayError("the Redis rate limit store is used before the gateway started")
        try:
            allowed, tokens = await script(keys=[self.prefix + key], args=[capacity, rate])  # type: ignore[operator]
        except (RedisError, OSError) as exc:
            self._failed(exc)
            self.unavailable += 1
            return None
        if self._down:
            self._down = False
            log.warning("rate limit store %s is back", self.url)
        return Take(bool(int(allowed)), float(tokens), capacity, rate)

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._down_until = self._clock() + self.retry_interval
        if not self._down:
            self._down = True
            log.warning(
                "rate limit store %s is unavailable (%s: %s); deciding without it until it is back",
                self.url,
                type(exc).__name__,
                exc,
            )


Buckets = MemoryBuckets | RedisBuckets


def make_buckets(config: RateLimitStore) -> Buckets:
    if config.backend == "redis":
        return RedisBuckets(config)
    return MemoryBuckets(config.max_keys)
