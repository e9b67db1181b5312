"""Token buckets for rate limits: the bucket arithmetic, the store interface and the in-memory
store (one per gateway process). The Redis store, shared by many gateways, is in
:mod:`edgeway.gateway.filters.ratelimit.redis_store`.

A bucket holds up to ``capacity`` tokens and refills at ``rate`` tokens per second; a request
takes one token or is refused. Every store answers the same :class:`Take`, from which the limit
headers are derived.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from edgeway.gateway.filters.ratelimit.config import RateLimitStore


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


class Buckets(Protocol):
    """A bucket store: a gateway component (started and stopped with the gateway)."""

    unavailable: int  # requests decided without the store (it was down)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def take(self, key: str, capacity: int, rate: float) -> Take | None:
        """Take a token from ``key``'s bucket; None when the store cannot answer now."""


def make_buckets(config: RateLimitStore) -> Buckets:
    if config.backend == "redis":
        # Imported only when used: redis-py costs ~0.2 s at start.
        from edgeway.gateway.filters.ratelimit.redis_store import RedisBuckets

        return RedisBuckets(config)
    return MemoryBuckets(config.max_keys)
