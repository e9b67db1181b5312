from __future__ import annotations

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
