"""Rate limits over real sockets: the token bucket, its keys, the headers, and Redis shared by two
gateways (the real Redis on 6379, a unique key prefix per test), Redis down failing open or closed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from edge_helpers import (
    auth_block,
    edge_config,
    gateway,
    issuer_for,
    jwks_server,
    problem,
    recording_backend,
    request,
)

from conftest import bound_socket, dead_port, pipe, require
from edgeway.gateway.filters.ratelimit.config import RateLimitStore
from edgeway.gateway.filters.ratelimit.redis_store import RedisBuckets
from edgeway.gateway.filters.ratelimit.store import MemoryBuckets, refill
from edgeway.security.keys import KeyRing


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(rule: dict[str, Any], path: str = "/api/**", **route: Any) -> list[dict[str, Any]]:
    return [{"match": {"path": path}, "rate_limit": rule, **route}]


def redis_store(prefix: str, **extra: Any) -> dict[str, Any]:
    return {"backend": "redis", "key_prefix": prefix, **extra}


async def test_the_bucket_refuses_past_its_burst_with_retry_after_and_ratelimit_headers() -> None:
    async with recording_backend() as (port, seen):
        cfg = edge_config(port, limited({"rate": 1, "per": "1m", "burst": 3}))
        async with gateway(cfg) as (gw, _):
            answers = [await request(gw, "GET", "/api/x") for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert [a[1]["ratelimit-remaining"] for a in answers] == [["2"], ["1"], ["0"], ["0"]]
    assert answers[0][1]["ratelimit-limit"] == ["3"]
    assert answers[0][1]["ratelimit-reset"] == ["60"]  # one token used: full again in a minute
    _status, headers, body = answers[3]
    assert headers["retry-after"] == ["60"]
    assert headers["content-type"] == ["application/problem+json"]
    assert problem(body)["retry_after"] == 60
    assert len(seen.requests) == 3


async def test_tokens_come_back_at_the_configured_rate() -> None:
    rule = limited({"rate": 20, "burst": 1})
    async with recording_backend() as (port, _), gateway(edge_config(port, rule)) as (gw, _):
        first = await request(gw, "GET", "/api/x")
        second = await request(gw, "GET", "/api/x")
        await asyncio.sleep(0.12)
        third = await request(gw, "GET", "/api/x")
    assert (first[0], second[0], third[0]) == (200, 429, 200)
    assert second[1]["retry-after"] == ["1"]  # never 0: a client must wait at least a second


def test_the_memory_bucket_step_by_step() -> None:
    clock = Clock()
    buckets = MemoryBuckets(max_keys=2, clock=clock)

    async def take(key: str) -> Any:
        return await buckets.take(key, 2, 0.5)

    async def run() -> None:
        a1, a2, a3 = await take("a"), await take("a"), await take("a")
        assert [t.allowed for t in (a1, a2, a3)] == [True, True, False]
        assert a3.retry_after == pytest.approx(2.0)
        assert a3.reset == pytest.approx(4.0)
        clock.now += 2.0
        assert (await take("a")).allowed
        await take("b")
        await take("c")  # evicts "a", the least recently used
        assert (await take("a")).remaining == 1  # a fresh bucket

    asyncio.run(run())
    assert refill(0.5, 10.0, 3, 1.0) == (True, 2.0)


@pytest.mark.parametrize(
    ("rule", "requests", "expected"),
    [
        # Two API keys, two buckets; no key: the client address.
        (
            {"rate": 1, "per": "1m", "key": "api_key"},
            [{"X-API-Key": "k1"}, {"X-API-Key": "k2"}, {}],
            [200, 200, 200],
        ),
        ({"rate": 1, "per": "1m", "key": "api_key"}, [{"X-API-Key": "k1"}, {"X-API-Key": "k1"}], [200, 429]),
        # The address is the peer's unless proxies are trusted: X-Forwarded-For is ignored here.
        (
            {"rate": 1, "per": "1m"},
            [{"X-Forwarded-For": "1.1.1.1"}, {"X-Forwarded-For": "2.2.2.2"}],
            [200, 429],
        ),
    ],
)
async def test_bucket_keys(rule: dict[str, Any], requests: list[dict[str, str]], expected: list[int]) -> None:
    async with recording_backend() as (port, _), gateway(edge_config(port, limited(rule))) as (gw, _):
        got = [(await request(gw, "GET", "/api/x", headers))[0] for headers in requests]
    assert got == expected


async def test_trusted_proxy_hops_key_by_the_forwarded_address() -> None:
    async with recording_backend() as (port, _):
        cfg = edge_config(port, limited({"rate": 1, "per": "1m"}), rate_limits={"trusted_proxy_hops": 1})
        async with gateway(cfg) as (gw, _):
            a = await request(gw, "GET", "/api/x", {"X-Forwarded-For": "9.9.9.9, 1.1.1.1"})
            b = await request(gw, "GET", "/api/x", {"X-Forwarded-For": "8.8.8.8, 2.2.2.2"})
            spoofed = await request(gw, "GET", "/api/x", {"X-Forwarded-For": "7.7.7.7, 1.1.1.1"})
    assert (a[0], b[0], spoofed[0]) == (200, 200, 429)  # only the trusted hop's entry counts


async def test_user_and_client_keys_use_the_verified_identity() -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    alice, bob = issuer.issue("alice").token, issuer.issue("bob").token
    web1 = issuer.issue("carol", claims={"client_id": "web"}).token
    web2 = issuer.issue("dave", claims={"client_id": "web"}).token
    async with recording_backend() as (port, _), jwks_server(ring) as jwks:
        routes = [
            *limited({"rate": 1, "per": "1m", "key": "user"}, "/u/**", auth={}),
            *limited({"rate": 1, "per": "1m", "key": "client"}, "/c/**", auth={}),
        ]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):

            async def get(path: str, token: str) -> int:
                return (await request(gw, "GET", path, {"authorization": f"Bearer {token}"}))[0]

            users = [await get("/u/x", alice), await get("/u/x", bob), await get("/u/x", alice)]
            clients = [await get("/c/x", web1), await get("/c/x", web2)]
    assert users == [200, 200, 429]
    assert clients == [200, 429]  # one client, one bucket, whoever the user


async def test_two_gateways_share_one_limit_in_redis() -> None:
    require("redis")
    prefix = f"edgeway-test:{uuid.uuid4().hex}:"
    async with recording_backend() as (port, seen):
        cfg = edge_config(
            port, limited({"rate": 1, "per": "1m", "burst": 10}), rate_limits=redis_store(prefix)
        )
        async with gateway(cfg) as (gw1, _), gateway(cfg) as (gw2, _):
            answers = await asyncio.gather(
                *(request(gw1 if i % 2 else gw2, "GET", "/api/x") for i in range(16))
            )
            statuses = sorted(a[0] for a in answers)
            remaining = await request(gw1, "GET", "/api/x")
    assert statuses == [200] * 10 + [429] * 6
    assert len(seen.requests) == 10
    assert remaining[0] == 429
    assert remaining[1]["ratelimit-remaining"] == ["0"]


async def test_redis_down_fails_open_by_default_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    dead = f"redis://127.0.0.1:{dead_port()}/0"
    async with recording_backend() as (port, seen):
        store = redis_store("x:", redis_url=dead, timeout="100ms")
        cfg = edge_config(port, limited({"rate": 1, "per": "1m"}), rate_limits=store)
        with caplog.at_level(logging.WARNING, "edgeway.gateway.filters.ratelimit.filter"):
            async with gateway(cfg) as (gw, _):
                statuses = [(await request(gw, "GET", "/api/x"))[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert len(seen.requests) == 3
    warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage, not per request


async def test_redis_down_fails_closed_when_configured() -> None:
    dead = f"redis://127.0.0.1:{dead_port()}/0"
    async with recording_backend() as (port, seen):
        store = redis_store("x:", redis_url=dead, timeout="100ms", on_store_error="deny", retry_interval="2s")
        cfg = edge_config(port, limited({"rate": 100}), rate_limits=store)
        async with gateway(cfg) as (gw, _):
            status, headers, body = await request(gw, "GET", "/api/x")
    assert status == 503
    assert headers["retry-after"] == ["2"]
    assert "rate limit store" in problem(body)["detail"]
    assert seen.requests == []


async def test_the_redis_store_counts_an_outage_and_recovers() -> None:
    require("redis")
    sock = bound_socket()  # refuses connections until the relay listens on it
    port = sock.getsockname()[1]

    async def forward(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection("127.0.0.1", 6379)
        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    clock = Clock()
    config = RateLimitStore(
        backend="redis",
        redis_url=f"redis://127.0.0.1:{port}/0",
        key_prefix=f"edgeway-test:{uuid.uuid4().hex}:",
        retry_interval=5.0,
    )
    store = RedisBuckets(config, clock=clock)
    await store.start()  # Redis is "down": nothing listens on the port yet; start still succeeds
    try:
        assert await store.take("k", 2, 1.0) is None  # skipped: the failed ping opened an outage
        assert (store.unavailable, store.failures) == (1, 1)
        server = await asyncio.start_server(forward, sock=sock)
        try:
            assert await store.take("k", 2, 1.0) is None  # still within retry_interval
            clock.now += 6.0
            first = await store.take("k", 2, 1.0)
            assert first is not None
            assert first.allowed
            assert first.remaining == 1
            assert store.unavailable == 2
        finally:
            server.close()
    finally:
        await store.stop()
