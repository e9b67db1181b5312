"""The gateway's response cache component: the stores, the in-flight misses and the metrics that
every caching route shares (``env.shared("cache", ...)``), and purging (the admin port's
``POST /cache/purge``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeway.gateway.filters.cache.config import CacheStore
from edgeway.gateway.filters.cache.purge import PurgeSelector
from edgeway.gateway.filters.cache.store import Entry, MemoryStore
from edgeway.observability.metrics import Metrics
from edgeway.tasks import cancel_and_wait

if TYPE_CHECKING:
    from edgeway.gateway.filters.cache.redis_store import RedisStore


@dataclass(frozen=True, slots=True)
class PurgeResult:
    memory: int  # entries removed from this gateway's memory
    redis: int | None  # entries removed from Redis; None without Redis (or when it failed)
    redis_error: str | None = None  # why Redis could not be purged (the others were not told)


class ResponseCache:
    """Memory in front, Redis behind when configured. Misses in flight are tracked per key so a
    second request for the same key waits for the first one's response (coalescing).

    ``epoch`` counts purges (this gateway's and, through Redis, the others'): a response that
    was on its way from the service when one happened is not stored, since the purge may have
    been meant for what it carries.
    """

    def __init__(self, config: CacheStore, metrics: Metrics) -> None:
        self.memory = MemoryStore(int(config.max_bytes))
        self.epoch = 0
        self._listener: asyncio.Task[None] | None = None
        self.redis: RedisStore | None = None
        if config.redis is not None:
            from edgeway.gateway.filters.cache.redis_store import RedisStore  # only gateways that use it pay

            self.redis = RedisStore(
                config.redis.url,
                config.redis.key_prefix,
                float(config.redis.timeout),
                float(config.redis.retry_after),
                on_error=lambda: self.redis_errors.inc(),
            )
        # key -> the leader's outcome: the stored entry, or None (not storable / failed)
        self.inflight: dict[bytes, asyncio.Future[Entry | None]] = {}
        self.requests = metrics.counter(
            "edgeway_gateway_cache_requests_total",
            "Cacheable requests by route and result: hit, miss, coalesced (answered by another "
            "request's upstream call), bypass (not looked up: Range, client no-cache).",
            ("route", "result"),
        )
        self.not_stored = metrics.counter(
            "edgeway_gateway_cache_not_stored_total",
            "Responses to cache misses that were not stored, by route and reason.",
            ("route", "reason"),
        )
        self.stored = metrics.counter(
            "edgeway_gateway_cache_stored_total", "Responses stored, by route.", ("route",)
        )
        self.evictions = metrics.counter(
            "edgeway_gateway_cache_evictions_total",
            "Entries evicted from memory to make room (least recently used first).",
        )
        metrics.gauge(
            "edgeway_gateway_cache_bytes",
            "Bytes held by the in-memory cache (bodies, headers, bookkeeping).",
            function=lambda: float(self.memory.bytes),
        )
        metrics.gauge(
            "edgeway_gateway_cache_entries",
            "Entries in the in-memory cache.",
            function=lambda: len(self.memory),
        )
        self.redis_errors = metrics.counter(
            "edgeway_gateway_cache_redis_errors_total",
            "Redis commands that failed or timed out (each counted as a miss or a skipped store).",
        )
        self.purged = metrics.counter(
            "edgeway_gateway_cache_purged_total",
            "Entries removed by purges, by store (memory: this process's; redis: the shared one) "
            "and origin (admin: this gateway's admin port; peer: another gateway's, or a lost "
            "subscription to them).",
            ("store", "origin"),
        )

    async def start(self) -> None:
        redis = self.redis
        if redis is not None:
            await redis.start()
            self._listener = asyncio.get_running_loop().create_task(
                redis.listen(self._peer_purged, self._missed_purges)
            )
            # Serve only once other gateways' purges reach this one (or Redis is known down).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(redis.subscribed.wait(), redis.timeout)

    async def stop(self) -> None:
        if self._listener is not None:
            await cancel_and_wait(self._listener)
            self._listener = None
        if self.redis is not None:
            await self.redis.stop()
        for waiter in self.inflight.values():
            if not waiter.done():
                waiter.set_result(None)
        self.inflight.clear()

    async def lookup(self, key: bytes, now: float) -> Entry | None:
        entry = self.memory.get(key, now)
        if entry is None and self.redis is not None:
            entry = await self.redis.get(key, now)
            if entry is not None:
                self._remember(key, entry)
        return entry

    def memory_put(self, key: bytes, entry: Entry) -> None:
        """Store in memory (synchronously, before coalesced waiters are released)."""
        self._remember(key, entry)

    async def store_shared(self, key: bytes, entry: Entry, now: float) -> None:
        """Store in Redis too, when configured."""
        if self.redis is not None:
            await self.redis.put(key, entry, now)

    async def purge(self, selector: PurgeSelector) -> PurgeResult:
        """Remove the entries ``selector`` picks from memory and Redis, and have every gateway
        sharing the Redis prefix purge its memory."""
        from edgeway.gateway.filters.cache.redis_store import CachePurgeError

        self.epoch += 1
        in_memory = self.memory.purge(selector.matches)
        self.purged.labels("memory", "admin").inc(in_memory)
        if self.redis is None:
            return PurgeResult(in_memory, None)
        try:
            in_redis = await self.redis.purge(selector)
        except CachePurgeError as exc:
            return PurgeResult(in_memory, None, str(exc))
        self.purged.labels("redis", "admin").inc(in_redis)
        return PurgeResult(in_memory, in_redis)

    def _peer_purged(self, selector: PurgeSelector) -> None:
        self.epoch += 1
        self.purged.labels("memory", "peer").inc(self.memory.purge(selector.matches))

    def _missed_purges(self) -> None:
        self.epoch += 1
        self.purged.labels("memory", "peer").inc(self.memory.clear())

    def _remember(self, key: bytes, entry: Entry) -> None:
        before = self.memory.evictions
        self.memory.put(key, entry)
        if self.memory.evictions != before:
            self.evictions.inc(self.memory.evictions - before)
