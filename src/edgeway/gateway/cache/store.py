"""Where cached responses live: an in-process LRU bounded in bytes, and a Redis several gateways
share.

Entries are immutable: a stored response is replaced, never edited, and expires at a wall-clock
time (``time.time()``) so that gateways sharing Redis agree on it. The memory store answers
synchronously (the hot path of a hit does not await); Redis is asked only on a memory miss and
refills memory with what it finds.

Redis failures never fail a request: an error or a command slower than ``timeout`` counts as a
miss (or a skipped store), is logged and counted, and Redis is not asked again for
``retry_after`` seconds, so a dead Redis costs one timeout per interval instead of one per request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edgeway.http.exchange import Headers

log = logging.getLogger("edgeway.gateway.cache")

# Bookkeeping per entry besides its bytes (the OrderedDict slot, the object, the key): counted so
# that many tiny entries cannot exceed max_bytes by an order of magnitude.
ENTRY_OVERHEAD = 256
_WIRE_VERSION = b"1"


@dataclass(slots=True, eq=False)
class Entry:
    """One stored response. ``stored_at`` is when its age was 0 (the response time minus the age
    it already had upstream); ``expires_at`` when it stops being fresh."""

    status: int
    headers: Headers
    body: bytes
    stored_at: float
    expires_at: float
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.body) + sum(len(n) + len(v) + 4 for n, v in self.headers) + ENTRY_OVERHEAD

    def age(self, now: float) -> int:
        return max(0, int(now - self.stored_at))

    def fresh(self, now: float) -> bool:
        return now < self.expires_at

    def encode(self) -> bytes:
        meta = {
            "s": self.status,
            "h": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in self.headers],
            "t": self.stored_at,
            "e": self.expires_at,
        }
        return _WIRE_VERSION + orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def decode(cls, data: bytes) -> Entry | None:
        """None for anything this version did not write (a foreign key under our prefix)."""
        if data[:1] != _WIRE_VERSION:
            return None
        meta_end = data.find(b"\n")
        if meta_end < 0:
            return None
        try:
            meta = orjson.loads(data[1:meta_end])
            headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in meta["h"]]
            return cls(int(meta["s"]), headers, data[meta_end + 1 :], float(meta["t"]), float(meta["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


class MemoryStore:
    """An LRU of entries whose total :attr:`Entry.size` stays within ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0  # entries pushed out to make room (not expiries)
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes, now: float) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not entry.fresh(now):
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: bytes, entry: Entry) -> bool:
        """Store ``entry``; False when it is larger than the whole store."""
        if entry.size > self.max_bytes:
            return False
        if key in self._entries:
            self._remove(key)
        while self.bytes + entry.size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            self.evictions += 1
        self._entries[key] = entry
        self.bytes += entry.size
        return True

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size


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
