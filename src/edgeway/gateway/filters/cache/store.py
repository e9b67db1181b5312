"""Cached responses: the entry, its wire form, and the in-process LRU bounded in bytes. The Redis
store several gateways share is in :mod:`.redis_store` (imported only when configured: redis-py
costs ~0.1 s of worker start).

Entries are immutable: a stored response is replaced, never edited, and expires at a wall-clock
time (``time.time()``) so that gateways sharing Redis agree on it. The memory store answers
synchronously (the hot path of a hit does not await); Redis is asked only on a memory miss and
refills memory with what it finds.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from edgeway.http.exchange import Headers

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

    def purge(self, match: Callable[[bytes], bool]) -> int:
        """Remove every entry whose key ``match`` accepts; how many went."""
        doomed = [key for key in self._entries if match(key)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def clear(self) -> int:
        """Remove every entry; how many went."""
        count = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        return count

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
