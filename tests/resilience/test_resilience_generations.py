"""Guards belong to one gateway (one config generation): live reload builds new ones beside the
running ones, over the same clusters, and discovery changes the instances underneath."""

from __future__ import annotations

import io
from typing import Any

from resilience_helpers import config, get, running

from conftest import dead_port
from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway

BREAKER = {"instance": {"consecutive_failures": 1, "open_for": "60s"}, "service": None}


def successor(gw: Gateway, cfg: dict[str, Any]) -> Gateway:
    """The next generation, keeping the running one's clusters (what a reload does)."""
    return Gateway(
        validate_config(cfg), AccessLog("res-gw", io.BytesIO()), reuse=gw.clusters, metrics=gw.env.metrics
    )


async def test_a_new_generation_judges_the_instances_afresh() -> None:
    dead = dead_port()
    cfg = config([dead], breaker=BREAKER)
    async with running(cfg) as (gp, gw):
        assert (await get(gp)).status == 502
        [ep] = gw.clusters["svc"].endpoints
        assert not ep.available  # its breaker is open for a minute
        guarded = successor(gw, cfg)
        await guarded.start()
        assert ep.available  # the new generation's breaker is closed: it may try again
        ep.available = False
        plain = successor(gw, config([dead]))
        await plain.start()
        assert ep.available  # a service without resilience puts every instance back
        for g in (guarded, plain):
            g.hand_over(["svc"])
            await g.stop()
        assert ep.available  # stopping a generation leaves the flags to the serving one


async def test_a_generation_dropped_after_starting_leaves_the_running_breaker_in_charge() -> None:
    dead = dead_port()
    async with running(config([dead], breaker=BREAKER)) as (gp, gw):
        assert (await get(gp)).status == 502
        candidate = successor(gw, config([dead], breaker={"instance": None, "service": None}))
        await candidate.start()  # its start put the instance back in the balancer...
        candidate.hand_over(["svc"])
        await candidate.stop()  # ...and then the reload failed
        reply = await get(gp)
        assert reply.status == 503  # the running breaker is still open: refused without a try
        assert b"no available instance" in reply.body
        assert not gw.clusters["svc"].endpoints[0].available


async def test_an_instance_that_discovery_removes_is_forgotten() -> None:
    first, second = [dead_port(), dead_port()]
    async with running(config([first, second], breaker=BREAKER)) as (gp, gw):
        assert (await get(gp)).status == 502
        cluster = gw.clusters["svc"]
        exposition = gw.env.metrics.exposition()[0].decode()
        assert f'instance="127.0.0.1:{first}"' in exposition
        cluster.update([f"http://127.0.0.1:{second}"])
        exposition = gw.env.metrics.exposition()[0].decode()
    assert f'edgeway_breaker_state{{instance="127.0.0.1:{first}"' not in exposition
    assert f'edgeway_instance_available{{instance="127.0.0.1:{first}"' not in exposition
