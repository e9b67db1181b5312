"""The Redis rate-limit store: one bucket shared by every gateway using the same key prefix.

One Lua script per request takes the token atomically (two gateways never both take the last
one), timed by Redis's own clock so the gateways' clocks need not agree. When Redis fails (down,
or slower than ``timeout``) the store reports the outage once in the log, counts every request
decided without it (``unavailable``), and skips Redis for ``retry_interval`` so an outage does
not add a timeout to each request; the filter then lets requests through (fail open, the
default) or refuses them with 503 (``on_store_error: deny``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.filters.ratelimit.config import RateLimitStore
from edgeway.gateway.filters.ratelimit.store import Take

log = logging.getLogger("edgeway.gateway.filters.ratelimit.filter")

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
