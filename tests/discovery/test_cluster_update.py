from __future__ import annotations

import asyncio
import re

import pytest

from edgeway.gateway.upstream.clusters import Cluster, ClusterChange, make_cluster
from edgeway.http.limits import PoolLimits, UpstreamTimeouts


def cluster(*urls: str) -> Cluster:
    return make_cluster("shop", list(urls), "round_robin", UpstreamTimeouts(1, 1, 2), PoolLimits())


def test_an_update_keeps_the_endpoints_that_stay_and_tells_the_listeners() -> None:
    c = cluster("http://10.0.0.1:80", "http://10.0.0.2:80")
    kept = c.endpoints[1]
    seen: list[ClusterChange] = []
    c.listeners.append(lambda _cluster, change: seen.append(change))
    change = c.update(["http://10.0.0.2:80", "http://10.0.0.3:80", "http://10.0.0.3:80/"])
    assert [ep.label for ep in c.endpoints] == ["10.0.0.2:80", "10.0.0.3:80"]
    assert c.endpoints[0] is kept
    assert [ep.label for ep in change.added] == ["10.0.0.3:80"]
    assert [ep.label for ep in change.removed] == ["10.0.0.1:80"]
    assert not change.removed[0].available
    assert seen == [change]
    assert not c.update(["http://10.0.0.3:80", "http://10.0.0.2:80"])  # same set: nothing to do
    assert len(seen) == 1


def test_an_ipv6_instance_gets_a_bracketed_host_header() -> None:
    c = cluster()
    c.update(["http://[fd00::1]:8080"])
    assert c.endpoints[0].authority == b"[fd00::1]:8080"
    assert c.endpoints[0].address == ("fd00::1", 8080)


def test_the_balancer_follows_the_new_list() -> None:
    c = cluster("http://a:1", "http://b:1", "http://c:1")
    c.pick()
    c.update(["http://d:1"])
    assert {c.pick().host for _ in range(3)} == {"d"}


async def test_a_removed_endpoint_closes_its_pool_after_its_last_request() -> None:
    c = cluster("http://10.0.0.1:80", "http://10.0.0.2:80")
    leaving = c.endpoints[0]
    leaving.outstanding = 2  # two requests in flight
    c.update(["http://10.0.0.2:80"])
    assert c.draining == [leaving]
    await asyncio.sleep(0.25)
    assert not leaving.pool.closed  # its requests still need the pool (and its deadlines)
    leaving.outstanding = 0
    async with asyncio.timeout(1):
        while not leaving.pool.closed:
            await asyncio.sleep(0.02)
    assert c.draining == []


async def test_close_drains_every_endpoint() -> None:
    c = cluster("http://10.0.0.1:80", "http://10.0.0.2:80")
    idle, busy = c.endpoints
    busy.outstanding = 1
    c.close()
    assert idle.pool.closed
    assert not busy.pool.closed
    busy.outstanding = 0
    async with asyncio.timeout(1):
        while not busy.pool.closed:
            await asyncio.sleep(0.02)


def test_a_drained_instance_stays_out_whatever_discovery_finds_until_undrained() -> None:
    c = cluster("http://10.0.0.1:80", "http://10.0.0.2:80")
    drained = c.drain("10.0.0.2:80")
    assert not drained.available
    assert [ep.label for ep in c.endpoints] == ["10.0.0.1:80"]
    assert c.drained == {("10.0.0.2", 80, False): "http://10.0.0.2:80"}
    c.update(["http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80"])  # discovery again
    assert [ep.label for ep in c.endpoints] == ["10.0.0.1:80", "10.0.0.3:80"]
    assert c.undrain("http://10.0.0.2:80") == "http://10.0.0.2:80"
    assert [ep.label for ep in c.endpoints] == ["10.0.0.1:80", "10.0.0.3:80", "10.0.0.2:80"]
    assert c.drained == {}
    with pytest.raises(KeyError, match=re.escape("its instances: 10.0.0.1:80, 10.0.0.3:80, 10.0.0.2:80")):
        c.drain("10.0.0.9:80")
