"""The healthy panic threshold end to end: real backends that fail their health checks but still
answer requests, an in-process gateway, its metrics, logs and drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from resilience_helpers import Seen, answering, backend, config, get, read_request, running

from edgeway.gateway.core.runtime import Gateway

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# Fast checks, one result decides: the tests wait for verdicts, not for thresholds.
CHECK = {"interval": "100ms", "timeout": "100ms", "healthy_threshold": 1, "unhealthy_threshold": 1}


class Fleet:
    """Backends that answer every request 200 with their name; their health check answers 503
    while they are marked sick (a starved machine missing its checks, seen from the gateway)."""

    def __init__(self, *names: str) -> None:
        self.sick = dict.fromkeys(names, False)
        self.served: list[str] = []
        self.ports: dict[str, int] = {}

    def handler(self, name: str) -> Handler:
        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            line, _, _ = await read_request(r)
            if b"/health/ready" in line:
                status = 503 if self.sick[name] else 200
            else:
                self.served.append(name)
                status = 200
            w.write(
                b"HTTP/1.1 %d X\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
                % (status, len(name), name.encode())
            )
            await w.drain()
            w.close()

        return handle

    @contextlib.asynccontextmanager
    async def up(self) -> AsyncIterator[list[int]]:
        async with contextlib.AsyncExitStack() as stack:
            for name in self.sick:
                self.ports[name] = await stack.enter_async_context(backend(self.handler(name)))
            yield list(self.ports.values())

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


def panic_gauge(gw: Gateway) -> float | None:
    """``edgeway_upstream_panic`` of the service ``svc``; None when not exported."""
    prefix = 'edgeway_upstream_panic{service="svc"} '
    for line in gw.env.metrics.exposition()[0].decode().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


async def until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


def available(gw: Gateway) -> int:
    count: int = gw.ready()[1]["services"]["svc"]
    return count


async def test_every_instance_failing_its_checks_still_serves_in_panic_and_the_gauge_follows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fleet = Fleet("a", "b")
    caplog.set_level(logging.WARNING, "edgeway.resilience")
    async with fleet.up() as ports, running(config(ports, health_check=CHECK)) as (gp, gw):
        assert panic_gauge(gw) == 0.0
        fleet.sick["a"] = fleet.sick["b"] = True
        await until(lambda: panic_gauge(gw) == 1.0, "the service enters panic")
        replies = [await get(gp) for _ in range(6)]
        assert available(gw) == 2  # both back in the balancer, and the gateway stays ready
        fleet.sick["a"] = fleet.sick["b"] = False
        await until(lambda: panic_gauge(gw) == 0.0, "the service leaves panic")
    assert [r.status for r in replies] == [200] * 6
    assert sorted(set(fleet.served)) == ["a", "b"]  # balanced over both, not stuck on one
    panics = [r for r in caplog.records if getattr(r, "event", None) == "panic"]
    assert [(r.levelno, r.panic) for r in panics] == [(logging.WARNING, True), (logging.WARNING, False)]  # type: ignore[attr-defined]
    assert "svc in panic: 0 of 2 instances healthy, below 50%" in panics[0].getMessage()


async def test_a_threshold_of_zero_never_panics_and_the_service_answers_503() -> None:
    fleet = Fleet("a", "b")
    async with fleet.up() as ports, running(config(ports, health_check=CHECK, panic_threshold=0)) as (gp, gw):
        fleet.sick["a"] = fleet.sick["b"] = True
        await until(lambda: available(gw) == 0, "both instances out")
        reply = await get(gp)
        assert panic_gauge(gw) == 0.0
    assert reply.status == 503
    assert b"no available instance" in reply.body
    assert fleet.served == []


async def test_one_instance_down_of_three_is_above_the_threshold_and_gets_no_traffic() -> None:
    fleet = Fleet("a", "b", "c")
    async with fleet.up() as ports, running(config(ports, health_check=CHECK)) as (gp, gw):
        fleet.sick["c"] = True
        await until(lambda: available(gw) == 2, "c out")
        replies = [await get(gp) for _ in range(9)]
        # Two of three (67 %) is at or above 50 %: no panic, the health verdict holds.
        assert panic_gauge(gw) == 0.0
        fleet.sick["b"] = True  # one of three (33 %): panic, c and b take traffic again
        await until(lambda: panic_gauge(gw) == 1.0, "panic at one healthy of three")
        fleet.served.clear()
        more = [await get(gp) for _ in range(9)]
    assert [r.status for r in replies + more] == [200] * 18
    assert sorted(fleet.served) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


async def test_a_drained_instance_stays_out_in_panic() -> None:
    fleet = Fleet("a", "b", "c")
    async with fleet.up() as ports, running(config(ports, health_check=CHECK)) as (gp, gw):
        gw.clusters["svc"].drain(fleet.url("c"))  # what POST /instances/drain does
        fleet.sick["a"] = fleet.sick["b"] = fleet.sick["c"] = True
        await until(lambda: panic_gauge(gw) == 1.0, "panic over the two serving instances")
        replies = [await get(gp) for _ in range(8)]
    assert [r.status for r in replies] == [200] * 8
    assert sorted(set(fleet.served)) == ["a", "b"]


@pytest.mark.parametrize("threshold", [50, 0])
async def test_ejected_instances_take_traffic_again_in_panic(threshold: int) -> None:
    seen: dict[str, Seen] = {"a": [], "b": [], "c": []}
    # Every failure ejects, up to every instance but one: a and b out leaves one of three (33 %).
    outlier = {"consecutive_failures": 1, "base_ejection_time": "30s", "max_ejection_percent": 100}
    async with (
        backend(answering("a", seen["a"], 502)) as a,
        backend(answering("b", seen["b"], 502)) as b,
        backend(answering("c", seen["c"])) as c,
        running(config([a, b, c], outlier_ejection=outlier, panic_threshold=threshold)) as (gp, gw),
    ):
        replies = [await get(gp) for _ in range(9)]
        in_panic = panic_gauge(gw)
    counts = {name: len(requests) for name, requests in seen.items()}
    if threshold:
        assert in_panic == 1.0
        assert counts == {"a": 3, "b": 3, "c": 3}  # the ejected ones are balanced over again
    else:
        assert in_panic == 0.0
        assert counts == {"a": 1, "b": 1, "c": 7}  # out after their first failure
    assert sum(r.status == 200 for r in replies) == counts["c"]
