from __future__ import annotations

import asyncio
import time

import pytest
from consul_api import Entry, consul_api
from watching import follow

from conftest import dead_port
from edgeway.discovery import ConsulSource, DiscoveryError


async def test_passing_instances_with_service_or_node_address() -> None:
    async with consul_api() as api:
        await api.set(
            "orders",
            [
                Entry("10.0.0.1", 8000),
                Entry("10.0.0.2", 8001, address="172.16.0.2"),  # the service address wins
                Entry("10.0.0.3", 8000, status="critical"),  # failing its check: left out
                Entry("fd00::4", 8000),
            ],
        )
        urls, index = await ConsulSource(f"http://127.0.0.1:{api.port}", "orders").fetch()
    assert urls == ["http://10.0.0.1:8000", "http://172.16.0.2:8001", "http://[fd00::4]:8000"]
    assert index == api.index


async def test_tag_datacenter_and_token_are_sent() -> None:
    async with consul_api() as api:
        api.token = "s3cret"
        await api.set("orders", [Entry("10.0.0.1", 80, tags=["v2"]), Entry("10.0.0.2", 80, tags=["v1"])])
        source = ConsulSource(
            f"http://127.0.0.1:{api.port}", "orders", tag="v2", datacenter="dc1", token="s3cret"
        )
        urls, _ = await source.fetch()
        await source.aclose()
        assert urls == ["http://10.0.0.1:80"]
        assert api.requests[-1] == {"passing": "1", "tag": "v2", "dc": "dc1"}
        with pytest.raises(DiscoveryError, match="403"):
            await ConsulSource(f"http://127.0.0.1:{api.port}", "orders", token="wrong").fetch()


async def test_a_change_arrives_through_a_blocking_query_at_once() -> None:
    async with consul_api() as api:
        await api.set("orders", [Entry("10.0.0.1", 80)])
        source = ConsulSource(f"http://127.0.0.1:{api.port}", "orders", wait=30)
        async with follow(source) as seen:
            await seen.until(lambda urls: urls == ["http://10.0.0.1:80"], 3)
            await asyncio.sleep(0.3)
            # The watch is parked in a blocking query carrying the last index, not polling.
            assert api.requests[-1]["index"] == str(api.index)
            assert api.requests[-1]["wait"] == "30s"
            asked = len(api.requests)
            started = time.monotonic()
            await api.set("orders", [Entry("10.0.0.1", 80), Entry("10.0.0.2", 80)])
            arrived = await seen.until(lambda urls: len(urls) == 2, 3)
            assert arrived - started < 1.0  # the parked query returned; no poll interval
            assert len(api.requests) <= asked + 1


async def test_an_index_that_goes_backwards_restarts_from_zero() -> None:
    async with consul_api() as api:
        await api.set("orders", [Entry("10.0.0.1", 80)], index=500)
        source = ConsulSource(f"http://127.0.0.1:{api.port}", "orders", wait=5)
        async with follow(source) as seen:
            await seen.until(bool, 3)
            await api.set("orders", [Entry("10.0.0.7", 80)], index=3)  # a restored cluster
            await seen.until(lambda urls: urls == ["http://10.0.0.7:80"], 3)
            # The next long poll carries the new index; wait for it (a busy machine is slow to
            # send it), then the one before it must have asked afresh.
            for _ in range(100):
                if api.requests[-1].get("index") == "3":
                    break
                await asyncio.sleep(0.05)
            assert api.requests[-1]["index"] == "3"
            assert "index" not in api.requests[-2]  # asked afresh after the index went back


async def test_failures_keep_the_last_set_and_the_watch_recovers() -> None:
    async with consul_api() as api:
        await api.set("orders", [Entry("10.0.0.1", 80)])
        source = ConsulSource(f"http://127.0.0.1:{api.port}", "orders", wait=0.2)
        async with follow(source) as seen:
            await seen.until(bool, 3)
            api.failing = True
            await asyncio.sleep(1.0)
            assert [urls for _, urls in seen.sets] == [["http://10.0.0.1:80"]]
            await api.set("orders", [Entry("10.0.0.2", 80)])
            api.failing = False
            await seen.until(lambda urls: urls == ["http://10.0.0.2:80"], 5)


async def test_an_unreachable_agent_is_a_discovery_error() -> None:
    with pytest.raises(DiscoveryError, match="orders"):
        await ConsulSource(f"http://127.0.0.1:{dead_port()}", "orders").fetch()
