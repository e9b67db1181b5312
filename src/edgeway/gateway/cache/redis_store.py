"""The Redis store of the response cache, shared by every gateway pointing at the same Redis.

Redis failures never fail a request: an error or a command slower than ``timeout`` counts as a
miss (or a skipped store), is logged and counted, and Redis is not asked again for
``retry_after`` seconds, so a dead Redis costs one timeout per interval instead of one per request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeway.gateway.cache.store import Entry

log = logging.getLogger("edgeway.gateway.cache")


class RedisStore:
    """Entries in Redis under ``key_prefix`` + the key's hex, expiring with them (``PX``)."""

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
        return self.key_prefix + key.hex().encode()

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
