from __future__ import annotations

import asyncio
import time

import pytest
from dns_server import dns_server
from watching import follow

from edgeway.discovery import DiscoveryError, DnsSource

NAME = "orders.shop.local."
SRV = "_http._tcp.orders.shop.local."


async def test_address_records_become_instances_on_the_configured_port() -> None:
    zone = {(NAME, "A"): (30, ["10.0.0.2", "10.0.0.1"]), (NAME, "AAAA"): (30, ["fd00::7"])}
    async with dns_server(zone) as server:
        source = DnsSource("orders.shop.local", port=8080, resolver=server.resolver())
        answer = await source.lookup()
    assert answer.urls == ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://[fd00::7]:8080"]
    assert answer.ttl == 30


@pytest.mark.parametrize("additional", [True, False])
async def test_srv_records_give_addresses_and_ports_with_targets_resolved(additional: bool) -> None:
    zone = {
        (SRV, "SRV"): (20, ["0 10 9001 pod-b.shop.local.", "0 10 9000 pod-a.shop.local."]),
        ("pod-a.shop.local.", "A"): (10, ["10.0.1.1"]),
        ("pod-b.shop.local.", "A"): (30, ["10.0.1.2"]),
    }
    async with dns_server(zone) as server:
        server.additional = additional
        source = DnsSource(SRV, type="SRV", resolver=server.resolver())
        answer = await source.lookup()
        asked_targets = server.queries[("pod-a.shop.local.", "A")]
    assert answer.urls == ["http://10.0.1.1:9000", "http://10.0.1.2:9001"]
    assert answer.ttl == 10  # the smallest TTL of the records used, targets included
    # With the addresses in the additional section, the targets are not asked for again.
    assert asked_targets == (0 if additional else 1)


async def test_the_answer_is_kept_for_its_ttl_then_changes_are_picked_up() -> None:
    zone = {(NAME, "A"): (1, ["10.0.0.1"])}
    async with dns_server(zone) as server:
        source = DnsSource(NAME, port=80, resolver=server.resolver(), min_ttl=0.05)
        async with follow(source) as seen:
            await seen.until(lambda urls: urls == ["http://10.0.0.1:80"], 3)
            changed_at = time.monotonic()
            zone[(NAME, "A")] = (1, ["10.0.0.1", "10.0.0.9"])
            arrived = await seen.until(lambda urls: "http://10.0.0.9:80" in urls, 3)
            queries = server.queries[(NAME, "A")]
    # Not before the TTL ran out (asked again once per second), and within it plus a margin.
    assert arrived - changed_at <= 2.0
    assert queries <= 3


async def test_a_long_ttl_is_respected_and_min_ttl_bounds_a_zero_one() -> None:
    zone = {(NAME, "A"): (3600, ["10.0.0.1"]), ("zero.shop.local.", "A"): (0, ["10.0.0.2"])}
    async with dns_server(zone) as server:
        long_lived = DnsSource(NAME, port=80, resolver=server.resolver(), min_ttl=0.05, max_ttl=600)
        zero = DnsSource("zero.shop.local", port=80, resolver=server.resolver(), min_ttl=0.3)
        async with follow(long_lived), follow(zero):
            await asyncio.sleep(1.0)
        assert server.queries[(NAME, "A")] == 1
        # TTL 0 would mean "ask every time"; min_ttl=0.3 caps it at ~4 asks in a second.
        assert 2 <= server.queries[("zero.shop.local.", "A")] <= 5


async def test_max_ttl_bounds_a_long_one() -> None:
    zone = {(NAME, "A"): (3600, ["10.0.0.1"])}
    async with dns_server(zone) as server:
        source = DnsSource(NAME, port=80, resolver=server.resolver(), min_ttl=0.05, max_ttl=0.2)
        async with follow(source) as seen:
            await seen.until(bool, 3)
            zone[(NAME, "A")] = (3600, ["10.0.0.5"])
            await seen.until(lambda urls: urls == ["http://10.0.0.5:80"], 2)


async def test_failing_servers_keep_the_last_answer_until_they_recover() -> None:
    zone = {(NAME, "A"): (1, ["10.0.0.1"])}
    async with dns_server(zone) as server:
        source = DnsSource(NAME, port=80, resolver=server.resolver(timeout=0.3), min_ttl=0.05, max_ttl=0.2)
        async with follow(source) as seen:
            await seen.until(bool, 3)
            server.mode = "servfail"
            await asyncio.sleep(1.2)
            assert [urls for _, urls in seen.sets] == [["http://10.0.0.1:80"]]  # nothing dropped
            server.mode = "drop"  # timeouts too
            await asyncio.sleep(0.8)
            assert len(seen.sets) == 1
            zone[(NAME, "A")] = (1, ["10.0.0.3"])
            server.mode = "ok"
            await seen.until(lambda urls: urls == ["http://10.0.0.3:80"], 4)


async def test_a_name_that_disappears_leaves_no_instances() -> None:
    zone = {(NAME, "A"): (1, ["10.0.0.1"])}
    async with dns_server(zone) as server:
        source = DnsSource(NAME, port=80, resolver=server.resolver(), min_ttl=0.05)
        async with follow(source) as seen:
            await seen.until(bool, 3)
            del zone[(NAME, "A")]  # NXDOMAIN: the service is gone, not the DNS
            await seen.until(lambda urls: urls == [], 3)


async def test_lookup_errors_name_the_query() -> None:
    async with dns_server({}) as server:
        server.mode = "drop"
        source = DnsSource(NAME, port=80, resolver=server.resolver(timeout=0.2))
        with pytest.raises(DiscoveryError, match=r"orders\.shop\.local\. \((A|AAAA)\) timed out"):
            await source.lookup()


def test_address_records_need_a_port() -> None:
    with pytest.raises(ValueError, match="port"):
        DnsSource(NAME)
