"""The Redis store of the response cache, shared by every gateway pointing at the same Redis.

Redis failures never fail a request: an error or a command slower than ``timeout`` counts as a
miss (or a skipped store), is logged and counted, and Redis is not asked again for
``retry_after`` seconds, so a dead Redis costs one timeout per interval instead of one per request.

A purge (:meth:`RedisStore.purge`) deletes the matching entries and publishes the purge on the
channel ``<key_prefix>purge``; every gateway sharing the prefix listens there
(:meth:`RedisStore.listen`) and purges its memory too. A gateway that lost its subscription may
have missed a purge, so when it subscribes again it drops its whole memory store (Redis, which
every purge reached, refills it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeway.gateway.filters.cache.purge import PurgeRequestError, PurgeSelector
from edgeway.gateway.filters.cache.store import Entry

log = logging.getLogger("edgeway.gateway.filters.cache")


class CachePurgeError(Exception):
    """Redis could not be purged (or the purge not published)."""


class RedisStore:
    """Entries in Redis under ``key_prefix`` + their key, expiring with them (``PX``)."""

    def __init__(
        self,
        url: str,
        key_prefix: str,
        timeout: float,
        retry_after: float,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self._on_error = on_error
        self.key_prefix = key_prefix.encode()
        self.timeout = timeout
        self.retry_after = retry_after
        self.errors = 0
        self.channel = self.key_prefix + b"purge"
        self.origin = uuid.uuid4().hex.encode()  # who published a purge: its own is not applied twice
        self.subscribed = asyncio.Event()  # set once the purge channel is listened to
        # Named, so an operator can tell in CLIENT LIST what the long-lived connection is.
        self.listener_name = "edgeway-cache-purge-" + self.origin[:12].decode()
        self._client: aioredis.Redis[bytes] | None = None
        self._down_until = 0.0

    async def start(self) -> None:
        self._client = aioredis.Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            # Start anyway: the cache works from memory until Redis answers.
            self._failed("ping", exc)

    async def stop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
            self._client = None

    def _key(self, key: bytes) -> bytes:
        return self.key_prefix + key

    def _available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.errors += 1
        if self._on_error is not None:
            self._on_error()
        self._down_until = time.monotonic() + self.retry_after
        log.warning(
            "cache: redis %s failed (%s: %s); using memory only for %.1fs",
            operation,
            type(exc).__name__,
            exc,
            self.retry_after,
        )

    async def get(self, key: bytes, now: float) -> Entry | None:
        if not self._available():
            return None
        assert self._client is not None
        try:
            data = await self._client.get(self._key(key))
        except (RedisError, OSError) as exc:
            self._failed("GET", exc)
            return None
        if data is None:
            return None
        entry = Entry.decode(data)
        return entry if entry is not None and entry.fresh(now) else None

    async def put(self, key: bytes, entry: Entry, now: float) -> None:
        if not self._available():
            return
        assert self._client is not None
        ttl_ms = math.ceil((entry.expires_at - now) * 1000)
        if ttl_ms <= 0:
            return
        try:
            await self._client.set(self._key(key), entry.encode(), px=ttl_ms)
        except (RedisError, OSError) as exc:
            self._failed("SET", exc)

    # -- purging ---------------------------------------------------------------------------------
    async def purge(self, selector: PurgeSelector) -> int:
        """Delete the entries ``selector`` picks and tell every gateway sharing this prefix;
        how many were deleted. :class:`CachePurgeError` when Redis fails (then the others may
        not have been told)."""
        client = self._client
        if client is None:
            raise CachePurgeError("the Redis store is not started")
        skip = len(self.key_prefix)
        deleted = 0
        batch: list[bytes] = []
        try:
            async for key in client.scan_iter(match=selector.redis_pattern(self.key_prefix), count=1000):
                if selector.matches(key[skip:]):
                    batch.append(key)
                if len(batch) >= 500:
                    deleted += await client.unlink(*batch)
                    batch = []
            if batch:
                deleted += await client.unlink(*batch)
            await client.publish(self.channel, self.origin + b" " + selector.encode())
        except (RedisError, OSError) as exc:
            self._failed("purge", exc)
            raise CachePurgeError(f"redis purge failed: {type(exc).__name__}: {exc}") from exc
        return deleted

    async def listen(self, on_purge: Callable[[PurgeSelector], None], on_gap: Callable[[], None]) -> None:
        """Until cancelled: call ``on_purge`` for every purge another gateway publishes, and
        ``on_gap`` on subscribing again after the subscription was lost (purges may have been
        missed meanwhile). A lost subscription is retried every ``retry_after`` seconds."""
        first = True
        while True:
            # Its own connection without a read timeout: it waits for messages indefinitely.
            client: aioredis.Redis[bytes] = aioredis.Redis.from_url(
                self.url, socket_connect_timeout=self.timeout, client_name=self.listener_name
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if not first:
                    on_gap()
                self.subscribed.set()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._received(message["data"], on_purge)
            except (RedisError, OSError) as exc:
                log.warning(
                    "cache: redis purge channel lost (%s: %s); subscribing again in %.1fs",
                    type(exc).__name__,
                    exc,
                    self.retry_after,
                )
            finally:
                first = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
                with contextlib.suppress(RedisError, OSError):
                    await client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
            await asyncio.sleep(self.retry_after)

    def _received(self, data: bytes, on_purge: Callable[[PurgeSelector], None]) -> None:
        origin, _, body = data.partition(b" ")
        if origin == self.origin:
            return
        try:
            selector = PurgeSelector.decode(body)
        except PurgeRequestError as exc:
            log.warning("cache: ignoring a malformed purge message on %r: %s", self.channel, exc)
            return
        on_purge(selector)
