from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator

import pytest
from dns_server import DnsServer, dns_server

from edgeway.discovery import (
    CachedDiscovery,
    ChainDiscovery,
    DiscoveryError,
    DnsDiscovery,
    StaticDiscovery,
    make_resolver,
)

ZONE = {
    ("_http._tcp.orders.shop.local.", "SRV"): (30, ["10 50 8001 b.shop.local.", "5 10 8000 a.shop.local."]),
    ("web.shop.local.", "A"): (30, ["10.1.0.2", "10.1.0.1"]),
    ("web.shop.local.", "AAAA"): (30, ["fd00::1"]),
}


@pytest.fixture
async def server() -> AsyncIterator[DnsServer]:
    async with dns_server(dict(ZONE)) as srv:
        yield srv


async def test_static_discovery_returns_configured_urls_without_trailing_slash() -> None:
    static = StaticDiscovery({"orders": ["http://a:1/", "http://b:2"]})
    assert await static.resolve("orders") == ["http://a:1", "http://b:2"]
    assert await static.resolve("other") == []


async def test_dns_srv_records_give_host_and_port_in_priority_order(server: DnsServer) -> None:
    dns_discovery = DnsDiscovery(domain="shop.local", resolver=server.resolver())
    assert await dns_discovery.resolve("orders") == ["http://a.shop.local:8000", "http://b.shop.local:8001"]


async def test_dns_falls_back_to_address_records_on_the_default_port(server: DnsServer) -> None:
    dns_discovery = DnsDiscovery(domain="shop.local", port=8080, resolver=server.resolver())
    assert await dns_discovery.resolve("web") == [
        "http://10.1.0.1:8080",
        "http://10.1.0.2:8080",
        "http://[fd00::1]:8080",
    ]


async def test_dns_unknown_name_resolves_to_nothing(server: DnsServer) -> None:
    assert await DnsDiscovery(domain="shop.local", resolver=server.resolver()).resolve("ghost") == []


async def test_dns_timeout_is_a_discovery_error() -> None:
    # A UDP socket held open that never reads: queries go unanswered (no ICMP refusal either).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as held:
        held.bind(("127.0.0.1", 0))
        silent = make_resolver([f"127.0.0.1:{held.getsockname()[1]}"])
        with pytest.raises(DiscoveryError, match="orders"):
            await DnsDiscovery(resolver=silent, timeout=0.3).resolve("orders")


async def test_dns_servers_that_fail_are_an_error_not_an_empty_answer(server: DnsServer) -> None:
    server.mode = "servfail"
    with pytest.raises(DiscoveryError, match="every server failed"):
        await DnsDiscovery(domain="shop.local", resolver=server.resolver()).resolve("web")


class _Failing:
    name = "broken"

    async def resolve(self, service: str) -> list[str]:
        raise DiscoveryError(service, "down")


class _Empty:
    name = "empty"

    async def resolve(self, service: str) -> list[str]:
        return []


async def test_chain_uses_the_first_source_with_an_answer_and_skips_failures() -> None:
    chain = ChainDiscovery([_Failing(), _Empty(), StaticDiscovery({"orders": ["http://s:1"]})])
    assert await chain.resolve("orders") == ["http://s:1"]
    assert chain.name == "broken+empty+static"


async def test_chain_raises_when_every_source_fails() -> None:
    with pytest.raises(DiscoveryError, match="every discovery source failed"):
        await ChainDiscovery([_Failing()]).resolve("orders")


async def test_cache_keeps_answers_for_the_ttl() -> None:
    now = [0.0]
    backing = {"orders": ["http://a:1"]}
    cached = CachedDiscovery(StaticDiscovery(backing), ttl=5, clock=lambda: now[0])
    assert await cached.resolve("orders") == ["http://a:1"]
    cached.inner = StaticDiscovery({"orders": ["http://b:1"]})
    now[0] = 4.9
    assert await cached.resolve("orders") == ["http://a:1"]
    now[0] = 5.0
    assert await cached.resolve("orders") == ["http://b:1"]


class _Switchable:
    """A source whose answer or failure the test sets."""

    name = "registry"

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.failing = False
        self.calls = 0

    async def resolve(self, service: str) -> list[str]:
        self.calls += 1
        if self.failing:
            raise DiscoveryError(service, "registry lookup timed out")
        return list(self.urls)


async def test_chain_with_no_answer_and_a_failed_source_is_a_failure_not_none() -> None:
    # The registry failed and env/static know nothing: the instances may exist, so "none" would lie.
    with pytest.raises(DiscoveryError, match="discovery failed for 'orders': broken: down"):
        await ChainDiscovery([_Empty(), _Failing(), _Empty()]).resolve("orders")
    assert await ChainDiscovery([_Empty(), _Empty()]).resolve("orders") == []


async def test_cache_serves_the_last_answer_while_the_source_fails_up_to_max_stale(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    source = _Switchable(["http://a:1", "http://b:1"])
    chain = ChainDiscovery([_Empty(), source])
    cached = CachedDiscovery(chain, ttl=5, max_stale=30, clock=lambda: now[0])
    assert await cached.resolve("orders") == ["http://a:1", "http://b:1"]

    source.failing = True
    with caplog.at_level(logging.DEBUG, logger="edgeway.discovery"):
        for t in (5.0, 6.0, 11.0, 34.9):
            now[0] = t
            assert await cached.resolve("orders") == ["http://a:1", "http://b:1"]
    # asked again once per ttl while failing, not on every call
    assert source.calls == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # one line from the chain (its source failed), one from the cache (serving stale), then quiet
    assert len(warnings) == 2
    assert "serving the 2 instance(s) known 5.0 s ago" in warnings[1].getMessage()

    now[0] = 40.0  # 35 s past the fetch: too old to trust
    with pytest.raises(DiscoveryError, match="registry lookup timed out"):
        await cached.resolve("orders")

    source.failing = False
    assert await cached.resolve("orders") == ["http://a:1", "http://b:1"]
    source.urls = []  # the registry says there are none now: believed at once
    now[0] = 46.0
    assert await cached.resolve("orders") == []


async def test_cache_without_max_stale_fails_with_the_source() -> None:
    now = [0.0]
    source = _Switchable(["http://a:1"])
    cached = CachedDiscovery(source, ttl=5, max_stale=0, clock=lambda: now[0])
    assert await cached.resolve("orders") == ["http://a:1"]
    source.failing = True
    now[0] = 5.0
    with pytest.raises(DiscoveryError):
        await cached.resolve("orders")
