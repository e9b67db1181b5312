"""The stores: the in-memory LRU bounded in bytes, the entry wire format, and Redis shared by
two gateways (the real Redis on 6379, a key prefix of its own per test)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from cache_push_helpers import Reply, http, own_redis_prefix, running_backend, running_gateway

from conftest import dead_port
from edgeway.gateway.filters.cache.redis_store import RedisStore
from edgeway.gateway.filters.cache.store import ENTRY_OVERHEAD, Entry, MemoryStore


def entry(body: bytes, ttl: float = 60.0, now: float | None = None) -> Entry:
    now = time.time() if now is None else now
    return Entry(200, [(b"content-type", b"text/plain")], body, now, now + ttl)


def test_entry_size_counts_body_headers_and_overhead() -> None:
    e = entry(b"x" * 1000)
    assert e.size == 1000 + len(b"content-type") + len(b"text/plain") + 4 + ENTRY_OVERHEAD


def test_lru_evicts_least_recently_used_entries_by_bytes() -> None:
    one = entry(b"a" * 1000)
    store = MemoryStore(max_bytes=3 * one.size)
    now = time.time()
    for key in (b"k1", b"k2", b"k3"):
        assert store.put(key, entry(b"a" * 1000))
    assert store.get(b"k1", now) is not None  # k1 is now the most recently used
    store.put(b"k4", entry(b"a" * 1000))
    assert store.get(b"k2", now) is None  # evicted: least recently used
    assert {k for k in (b"k1", b"k3", b"k4") if store.get(k, now) is not None} == {b"k1", b"k3", b"k4"}
    assert store.evictions == 1
    assert store.bytes == 3 * one.size
    # one large entry pushes out as many small ones as it needs
    big = entry(b"b" * (2 * one.size - (one.size - 1000)))
    assert big.size == 2 * one.size
    store.put(b"big", big)
    assert store.evictions == 3  # k1 and k3 went, the two least recently used
    assert store.bytes == store.max_bytes
    assert store.get(b"k4", now) is not None


def test_an_entry_larger_than_the_store_is_refused_and_evicts_nothing() -> None:
    store = MemoryStore(max_bytes=2000)
    store.put(b"small", entry(b"s"))
    assert not store.put(b"huge", entry(b"h" * 5000))
    assert store.get(b"small", time.time()) is not None
    assert store.evictions == 0


def test_replacing_a_key_keeps_the_byte_count_exact() -> None:
    store = MemoryStore(max_bytes=100_000)
    store.put(b"k", entry(b"a" * 100))
    store.put(b"k", entry(b"b" * 300))
    assert store.bytes == entry(b"b" * 300).size
    assert len(store) == 1


def test_expired_entries_are_not_returned_and_free_their_bytes() -> None:
    store = MemoryStore(max_bytes=100_000)
    now = time.time()
    store.put(b"k", entry(b"a", ttl=1.0, now=now))
    assert store.get(b"k", now + 0.5) is not None
    assert store.get(b"k", now + 1.0) is None
    assert store.bytes == 0


def test_entry_wire_format_round_trips_and_rejects_foreign_values() -> None:
    e = Entry(203, [(b"x-a", b"\xe9t\xe9"), (b"vary", b"accept")], b"\x00\n\xffbody", 1.5, 99.25)
    back = Entry.decode(e.encode())
    assert back is not None
    assert (back.status, back.headers, back.body, back.stored_at, back.expires_at) == (
        203,
        e.headers,
        e.body,
        1.5,
        99.25,
    )
    for junk in (b"", b"2{}\nx", b"1not json\nx", b"1{}\n", b"1[1,2]\n"):
        assert Entry.decode(junk) is None


async def test_redis_store_keeps_entries_until_they_expire() -> None:
    async with own_redis_prefix() as prefix:
        store = RedisStore("redis://127.0.0.1:6379/0", prefix, timeout=1.0, retry_after=1.0)
        await store.start()
        try:
            now = time.time()
            key = b"items|/items/1|" + b"ab" * 20
            await store.put(key, entry(b"shared", ttl=0.5, now=now), now)
            found = await store.get(key, time.time())
            assert found is not None
            assert found.body == b"shared"
            client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
            ttl_ms = await client.pttl(prefix.encode() + key)  # readable: route and path first
            await client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
            assert 0 < ttl_ms <= 500
            assert await store.get(key, now + 0.6) is None  # stale by the entry's own clock
        finally:
            await store.stop()


async def test_a_dead_redis_is_a_miss_and_is_left_alone_for_a_while() -> None:
    errors: list[int] = []
    store = RedisStore(
        f"redis://127.0.0.1:{dead_port()}/0",
        "p:",
        timeout=0.2,
        retry_after=60.0,
        on_error=lambda: errors.append(1),
    )
    await store.start()  # starts anyway
    try:
        assert errors == [1]
        started = time.monotonic()
        assert await store.get(b"k", time.time()) is None
        await store.put(b"k", entry(b"x"), time.time())
        assert time.monotonic() - started < 0.1  # not asked again within retry_after
        assert errors == [1]
    finally:
        await store.stop()


def shared_cfg(port: int, prefix: str, redis_port: int = 6379) -> dict[str, Any]:
    return {
        "services": {"b": {"instances": [f"http://127.0.0.1:{port}"]}},
        "routes": [
            {
                "id": "items",
                "match": {"path": "/items/**"},
                "proxy": {"service": "b"},
                "cache": {"ttl": "60s"},
            }
        ],
        "cache": {
            "max_bytes": "1MiB",
            "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": prefix},
        },
    }


async def test_two_gateways_share_entries_through_redis() -> None:
    calls: list[int] = []

    async def respond(line: bytes, h: dict[bytes, bytes]) -> Reply:
        calls.append(1)
        return 200, [(b"content-type", b"application/json")], b'{"n": %d}' % len(calls)

    async with (
        own_redis_prefix() as prefix,
        running_backend(respond) as b,
        running_gateway(shared_cfg(b.port, prefix)) as one,
        running_gateway(shared_cfg(b.port, prefix)) as two,
    ):
        _, h1, body1 = await http(one.port, "GET", "/items/7?x=1")
        _, h2, body2 = await http(two.port, "GET", "/items/7?x=1")
        _, h3, body3 = await http(two.port, "GET", "/items/7?x=1")
        _, h4, _ = await http(two.port, "GET", "/items/8")
    assert (h1["x-cache"], h2["x-cache"], h3["x-cache"], h4["x-cache"]) == ("MISS", "HIT", "HIT", "MISS")
    assert body1 == body2 == body3 == b'{"n": 1}'
    assert h2["content-type"] == "application/json"
    assert len(calls) == 2


async def test_a_gateway_serves_from_memory_when_redis_is_down() -> None:
    async def respond(line: bytes, h: dict[bytes, bytes]) -> Reply:
        return 200, [], b"ok"

    async with running_backend(respond) as b, running_gateway(shared_cfg(b.port, "x:", dead_port())) as g:
        s1, h1, _ = await http(g.port, "GET", "/items/1")
        s2, h2, _ = await http(g.port, "GET", "/items/1")
        text, _ = g.gw.env.metrics.exposition()
    assert (s1, s2, h1["x-cache"], h2["x-cache"]) == (200, 200, "MISS", "HIT")
    assert b"edgeway_gateway_cache_redis_errors_total 1.0" in text
