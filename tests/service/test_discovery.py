from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dns.asyncresolver
import dns.message
import dns.rcode
import dns.rrset
import pytest

from conftest import free_port
from edgeway.service.discovery import (
    CachedDiscovery,
    ChainDiscovery,
    DnsDiscovery,
    EnvDiscovery,
    StaticDiscovery,
)
from edgeway.service.errors import DiscoveryError

ZONE = {
    ("_http._tcp.orders.shop.local.", "SRV"): ["10 50 8001 b.shop.local.", "5 10 8000 a.shop.local."],
    ("web.shop.local.", "A"): ["10.1.0.1", "10.1.0.2"],
    ("web.shop.local.", "AAAA"): ["fd00::1"],
}


class _DnsServer(asyncio.DatagramProtocol):
    """A real UDP DNS server answering from ZONE, so the resolver path is the production one."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        question = query.question[0]
        name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        records = ZONE.get((name, rdtype))
        if records:
            response.answer.append(dns.rrset.from_text(name, 30, "IN", rdtype, *records))
        elif not any(key[0] == name for key in ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]


@pytest.fixture
async def resolver() -> AsyncIterator[dns.asyncresolver.Resolver]:
    port = free_port()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _DnsServer, local_addr=("127.0.0.1", port)
    )
    res = dns.asyncresolver.Resolver(configure=False)
    res.nameservers = ["127.0.0.1"]
    res.port = port
    yield res
    transport.close()


async def test_static_discovery_returns_configured_urls_without_trailing_slash() -> None:
    static = StaticDiscovery({"orders": ["http://a:1/", "http://b:2"]})
    assert await static.resolve("orders") == ["http://a:1", "http://b:2"]
    assert await static.resolve("other") == []


async def test_env_discovery_reads_the_service_variable() -> None:
    env = EnvDiscovery({"EDGEWAY_SERVICE_ORDER_API_URLS": " http://a:1 , http://b:2/ ,"})
    assert await env.resolve("order-api") == ["http://a:1", "http://b:2"]
    assert await env.resolve("cart") == []


async def test_dns_srv_records_give_host_and_port_in_priority_order(
    resolver: dns.asyncresolver.Resolver,
) -> None:
    dns_discovery = DnsDiscovery(domain="shop.local", resolver=resolver)
    assert await dns_discovery.resolve("orders") == ["http://a.shop.local:8000", "http://b.shop.local:8001"]


async def test_dns_falls_back_to_address_records_on_the_default_port(
    resolver: dns.asyncresolver.Resolver,
) -> None:
    dns_discovery = DnsDiscovery(domain="shop.local", port=8080, resolver=resolver)
    assert await dns_discovery.resolve("web") == [
        "http://10.1.0.1:8080",
        "http://10.1.0.2:8080",
        "http://[fd00::1]:8080",
    ]


async def test_dns_unknown_name_resolves_to_nothing(resolver: dns.asyncresolver.Resolver) -> None:
    assert await DnsDiscovery(domain="shop.local", resolver=resolver).resolve("ghost") == []


async def test_dns_timeout_is_a_discovery_error() -> None:
    silent = dns.asyncresolver.Resolver(configure=False)
    silent.nameservers = ["127.0.0.1"]
    silent.port = free_port()  # nothing listens: queries go unanswered
    with pytest.raises(DiscoveryError, match="orders"):
        await DnsDiscovery(resolver=silent, timeout=0.3).resolve("orders")


class _Failing:
    name = "broken"

    async def resolve(self, service: str) -> list[str]:
        raise DiscoveryError(service, "down")


async def test_chain_uses_the_first_source_with_an_answer_and_skips_failures() -> None:
    chain = ChainDiscovery([_Failing(), EnvDiscovery({}), StaticDiscovery({"orders": ["http://s:1"]})])
    assert await chain.resolve("orders") == ["http://s:1"]
    assert chain.name == "broken+env+static"


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
