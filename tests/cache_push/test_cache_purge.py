"""Purging the response cache through the admin port (``POST /cache/purge``): by route, by path
prefix, everything; in memory, in Redis, and in every gateway sharing that Redis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from cache_push_helpers import Reply, RunningGateway, http, own_redis_prefix, running_backend, running_gateway

from edgeway.gateway.filters.cache.purge import PurgeRequestError, PurgeSelector
from edgeway.gateway.filters.cache.shared import ResponseCache
from edgeway.gateway.process.admin import AdminHandler
from edgeway.gateway.process.admin_auth import AdminGuard
from edgeway.http.listener import Listener, bind_socket

HEX = b"0f" * 20


def key(route: str, path: str) -> bytes:
    return f"{route}|{path}|".encode() + HEX


# --------------------------------------------------------------------------- what a purge picks


@pytest.mark.parametrize(
    ("selector", "picked"),
    [
        (PurgeSelector(), {"a:/x", "a:/x/1", "b:/x-old", "b:/"}),
        (PurgeSelector(route="a"), {"a:/x", "a:/x/1"}),
        (PurgeSelector(prefix="/x"), {"a:/x", "a:/x/1"}),  # whole segments: not /x-old
        (PurgeSelector(prefix="/x/"), {"a:/x/1"}),
        (PurgeSelector(prefix="/"), {"a:/x", "a:/x/1", "b:/x-old", "b:/"}),
        (PurgeSelector(route="b", prefix="/x"), set()),
        (PurgeSelector(route="b", prefix="/x-old"), {"b:/x-old"}),
    ],
)
def test_a_selector_picks_entries_by_route_and_whole_path_segments(
    selector: PurgeSelector, picked: set[str]
) -> None:
    entries = {"a:/x", "a:/x/1", "b:/x-old", "b:/"}
    assert {e for e in entries if selector.matches(key(*e.split(":", 1)))} == picked


def test_a_path_holding_the_separator_or_glob_characters_is_handled() -> None:
    assert PurgeSelector(prefix="/a|b").matches(key("r", "/a|b/c"))
    assert not PurgeSelector(route="r").matches(key("r2", "/a"))
    pattern = PurgeSelector(route="r", prefix="/x*[y]?").redis_pattern(b"p:")
    assert pattern == b"p:r|/x\\*\\[y\\]\\?*"
    assert PurgeSelector().redis_pattern(b"p*") == b"p\\**"


@pytest.mark.parametrize(
    ("query", "body", "expected"),
    [
        (b"route=items", b"", PurgeSelector(route="items")),
        (b"prefix=/items/7&route=items", b"", PurgeSelector("items", "/items/7")),
        (b"all=true", b"", PurgeSelector()),
        (b"", b'{"prefix": "/items"}', PurgeSelector(prefix="/items")),
        (b"", b'{"all": true}', PurgeSelector()),
    ],
)
def test_a_purge_request_reads_the_query_or_a_json_body(
    query: bytes, body: bytes, expected: PurgeSelector
) -> None:
    assert PurgeSelector.from_request(query, body) == expected


@pytest.mark.parametrize(
    ("query", "body", "message"),
    [
        (b"", b"", "say what to purge"),
        (b"", b"{}", "say what to purge"),
        (b"route=a", b'{"route": "a"}', "not both"),
        (b"", b"[1]", "must be a JSON object"),
        (b"", b"{nope", "not JSON"),
        (b"prefix=items", b"", "starting with '/'"),
        (b"route=a&route=b", b"", "given 2 times"),
        (b"all=yes", b"", "all must be true"),
        (b"", b'{"all": true, "route": "a"}', "give it alone"),
        (b"", b'{"path": "/a"}', "unknown member 'path'"),
    ],
)
def test_an_unclear_purge_request_is_refused(query: bytes, body: bytes, message: str) -> None:
    with pytest.raises(PurgeRequestError, match=message):
        PurgeSelector.from_request(query, body)


# --------------------------------------------------------------------------- through the admin port

ADMIN_TOKEN = "purge-test-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}


@contextlib.asynccontextmanager
async def admin_of(running: RunningGateway) -> AsyncIterator[int]:
    listener = Listener(AdminHandler(running.gw, AdminGuard(ADMIN_TOKEN, ["shop.test"])), running.gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port
    finally:
        await listener.shutdown(1.0)


def numbering() -> tuple[list[bytes], Callable[[bytes, dict[bytes, bytes]], Any]]:
    """A backend answering every GET with its running count, recording the request lines."""
    lines: list[bytes] = []

    async def respond(line: bytes, h: dict[bytes, bytes]) -> Reply:
        lines.append(line)
        return 200, [(b"content-type", b"application/json")], b'{"n": %d}' % len(lines)

    return lines, respond


def two_routes(port: int, **cache: Any) -> dict[str, Any]:
    service = {"b": {"instances": [f"http://127.0.0.1:{port}"]}}
    routes = [
        {"id": "items", "match": {"path": "/items/**"}, "proxy": {"service": "b"}, "cache": {"ttl": "60s"}},
        {"id": "users", "match": {"path": "/users/**"}, "proxy": {"service": "b"}, "cache": {"ttl": "60s"}},
        {"id": "live", "match": {"path": "/live/**"}, "proxy": {"service": "b"}},
    ]
    return {"services": service, "routes": routes, **({"cache": cache} if cache else {})}


async def cached(port: int, *paths: str) -> list[str]:
    """X-Cache of a GET to each path."""
    return [(await http(port, "GET", p))[1]["x-cache"] for p in paths]


async def purge(admin: int, target: str = "/cache/purge", body: Any = None) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else b""
    status, _, answer = await http(admin, "POST", target, ADMIN_HEADERS, body=data)
    return status, orjson.loads(answer)


async def test_purging_by_route_by_prefix_and_everything_in_memory() -> None:
    lines, respond = numbering()
    paths = ("/items/7", "/items/7/reviews", "/items/70", "/users/1")
    async with (
        running_backend(respond) as b,
        running_gateway(two_routes(b.port)) as gw,
        admin_of(gw) as admin,
    ):
        assert await cached(gw.port, *paths) == ["MISS"] * 4
        assert await cached(gw.port, *paths) == ["HIT"] * 4

        status, answer = await purge(admin, "/cache/purge?route=items&prefix=/items/7")
        assert (status, answer) == (
            200,
            {"purged": {"memory": 2, "redis": None}, "route": "items", "prefix": "/items/7", "shared": False},
        )
        assert await cached(gw.port, *paths) == ["MISS", "MISS", "HIT", "HIT"]

        status, answer = await purge(admin, body={"route": "users"})
        assert answer["purged"]["memory"] == 1
        assert await cached(gw.port, *paths) == ["HIT", "HIT", "HIT", "MISS"]

        status, answer = await purge(admin, body={"all": True})
        assert answer["purged"]["memory"] == 4
        assert await cached(gw.port, *paths) == ["MISS"] * 4
        text, _ = gw.gw.env.metrics.exposition()
    assert len(lines) == 4 + 2 + 1 + 4
    assert b'edgeway_gateway_cache_purged_total{origin="admin",store="memory"} 7.0' in text


async def test_bad_purge_requests_are_problems_that_say_why() -> None:
    _, respond = numbering()
    async with (
        running_backend(respond) as b,
        running_gateway(two_routes(b.port)) as gw,
        admin_of(gw) as admin,
    ):
        wrong_method = await http(admin, "GET", "/cache/purge?all=true", ADMIN_HEADERS)
        unclear = await purge(admin)
        unknown = await purge(admin, body={"route": "live"})
    assert wrong_method[0] == 405
    assert wrong_method[1]["allow"] == "POST"
    assert unclear[0] == 400
    assert "say what to purge" in unclear[1]["detail"]
    assert unknown[0] == 404
    assert unknown[1]["routes"] == ["items", "users"]
    assert "no route 'live' with a cache" in unknown[1]["detail"]


async def test_a_gateway_that_caches_nothing_has_nothing_to_purge() -> None:
    _, respond = numbering()
    cfg = {
        "services": {"b": {"instances": ["http://127.0.0.1:9"]}},
        "routes": [{"id": "live", "match": {"path": "/**"}, "proxy": {"service": "b"}}],
    }
    async with running_backend(respond), running_gateway(cfg) as gw, admin_of(gw) as admin:
        status, answer = await purge(admin, body={"all": True})
    assert status == 409
    assert "caches responses" in answer["detail"]


async def test_a_response_on_its_way_when_the_cache_is_purged_is_not_stored() -> None:
    release = asyncio.Event()
    count = 0

    async def slow(line: bytes, h: dict[bytes, bytes]) -> Reply:
        nonlocal count
        count += 1
        if count == 1:
            await release.wait()
        return 200, [], b"v%d" % count

    async with (
        running_backend(slow) as b,
        running_gateway(two_routes(b.port)) as gw,
        admin_of(gw) as admin,
    ):
        first = asyncio.ensure_future(http(gw.port, "GET", "/items/1"))
        await asyncio.sleep(0.1)  # upstream, waiting
        await purge(admin, body={"route": "items"})
        release.set()
        status, headers, body = await first
        after = await http(gw.port, "GET", "/items/1")
        text, _ = gw.gw.env.metrics.exposition()
    assert (status, headers["x-cache"], body) == (200, "MISS", b"v1")
    assert (after[1]["x-cache"], after[2]) == ("MISS", b"v2")  # v1 was not kept
    assert b'edgeway_gateway_cache_not_stored_total{reason="purged",route="items"} 1.0' in text


# --------------------------------------------------------------------------- shared through Redis


def shared(port: int, prefix: str) -> dict[str, Any]:
    redis = {"url": "redis://127.0.0.1:6379/0", "key_prefix": prefix, "retry_after": "200ms"}
    return two_routes(port, max_bytes="1MiB", redis=redis)


def cache_of(running: RunningGateway) -> ResponseCache:
    found = running.gw.env.components["cache"]
    assert isinstance(found, ResponseCache)
    return found


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def redis_keys(prefix: str) -> list[bytes]:
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        return sorted([k async for k in client.scan_iter(match=prefix + "*")])
    finally:
        await client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5


async def test_a_purge_reaches_redis_and_every_gateway_sharing_it() -> None:
    lines, respond = numbering()
    async with (
        own_redis_prefix() as redis_prefix,
        running_backend(respond) as b,
        running_gateway(shared(b.port, redis_prefix)) as one,
        running_gateway(shared(b.port, redis_prefix)) as two,
        admin_of(one) as admin,
    ):
        assert await cached(one.port, "/items/7", "/users/1") == ["MISS", "MISS"]
        # The second gateway finds both in Redis and keeps them in its memory.
        assert await cached(two.port, "/items/7", "/users/1") == ["HIT", "HIT"]
        assert len(cache_of(two).memory) == 2
        stored = await redis_keys(redis_prefix)
        assert [k.split(b"|")[:2] for k in stored] == [
            [f"{redis_prefix}items".encode(), b"/items/7"],
            [f"{redis_prefix}users".encode(), b"/users/1"],
        ]

        status, answer = await purge(admin, body={"route": "items"})
        assert (status, answer["purged"], answer["shared"]) == (200, {"memory": 1, "redis": 1}, True)
        await until(lambda: len(cache_of(two).memory) == 1)  # told through Redis
        remaining = await redis_keys(redis_prefix)
        assert await cached(two.port, "/items/7", "/users/1") == ["MISS", "HIT"]
        assert await cached(one.port, "/items/7") == ["HIT"]  # the second gateway stored it again
        text, _ = two.gw.env.metrics.exposition()
    assert remaining == stored[1:]
    assert len(lines) == 3
    assert b'edgeway_gateway_cache_purged_total{origin="peer",store="memory"} 1.0' in text


async def test_a_gateway_that_lost_the_purge_channel_drops_its_memory_when_back() -> None:
    _, respond = numbering()
    async with (
        own_redis_prefix() as redis_prefix,
        running_backend(respond) as b,
        running_gateway(shared(b.port, redis_prefix)) as gw,
    ):
        assert await cached(gw.port, "/items/1", "/items/1") == ["MISS", "HIT"]
        redis_store = cache_of(gw).redis
        assert redis_store is not None
        client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            killed = 0
            for info in await client.client_list():
                if info.get("name") == redis_store.listener_name:
                    killed += await client.client_kill_filter(_id=info["id"])
        finally:
            await client.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5
        assert killed == 1
        # It may have missed a purge while away: memory is emptied, Redis still has the entry.
        await until(lambda: len(cache_of(gw).memory) == 0)
        assert await cached(gw.port, "/items/1") == ["HIT"]
