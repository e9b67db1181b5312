"""The resilience hooks of the proxy end to end: in-process gateway, real sockets, raw backends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from resilience_helpers import answering, backend, config, get, read_request, running

from conftest import dead_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --------------------------------------------------------------------------- deadlines


async def test_the_remaining_budget_travels_upstream_and_a_shorter_incoming_one_wins() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    async with (
        backend(answering("a", seen)) as port,
        running(config([port], timeouts={"first_byte": "2s", "total": "3s"})) as (gp, _),
    ):
        assert (await get(gp)).status == 200
        assert (await get(gp, headers="x-edgeway-deadline-ms: 800\r\n")).status == 200
        assert (await get(gp, headers="grpc-timeout: 20S\r\n")).status == 200
        expired = await get(gp, headers="X-Edgeway-Deadline-Ms: 0\r\n")
    first, second, third = (int(h[b"x-edgeway-deadline-ms"]) for _, h, _ in seen)
    assert 2900 <= first <= 3000
    assert 700 <= second <= 800  # the caller's budget, and only one header upstream
    assert 2900 <= third <= 3000  # capped by the service's total
    assert expired.status == 504
    assert b"deadline" in expired.body
    assert len(seen) == 3


async def test_an_incoming_budget_shortens_the_gateway_timeout_too() -> None:
    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(2)
        w.close()

    async with backend(slow) as port, running(config([port])) as (gp, _):
        started = time.monotonic()
        reply = await get(gp, headers="x-edgeway-deadline-ms: 300\r\n")
    assert reply.status == 504
    assert time.monotonic() - started < 1.5


# --------------------------------------------------------------------------- retries


RETRY = {"attempts": 3, "backoff": "1ms", "max_backoff": "2ms"}


async def test_a_post_that_never_left_is_retried_on_another_instance_with_its_body() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    dead = dead_port()
    async with backend(answering("alive", seen)) as port:
        cfg = config([dead, port], retry=RETRY)
        async with running(cfg) as (gp, _):
            replies = [await get(gp, "/orders", method="POST", body=b'{"n": %d}' % i) for i in range(4)]
    assert [r.status for r in replies] == [200] * 4
    assert [body for _, _, body in seen] == [b'{"n": %d}' % i for i in range(4)]


async def test_a_post_that_reached_an_instance_is_never_sent_twice() -> None:
    hits: list[bytes] = []

    async def reset_after_reading(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line, _, _ = await read_request(r)
        hits.append(line.split()[0])
        w.transport.abort()

    other: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    async with (
        backend(reset_after_reading) as bad,
        backend(answering("b", other)) as good,
        running(config([bad, good], retry=RETRY)) as (gp, _),
    ):
        post = await get(gp, "/pay", method="POST", body=b"{}")
        gets = [await get(gp, "/x") for _ in range(4)]
    assert post.status == 502
    assert hits.count(b"POST") == 1
    assert [r.status for r in gets] == [200] * 4  # the GETs that hit the bad one were retried
    assert len(other) == 4
    assert len(hits) > 1


async def test_retry_on_status_goes_to_another_instance_only_for_idempotent_requests() -> None:
    busy: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    fine: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    async with (
        backend(answering("busy", busy, status=503)) as b1,
        backend(answering("fine", fine)) as b2,
        running(config([b1, b2], retry=RETRY)) as (gp, _),
    ):
        gets = [await get(gp) for _ in range(4)]
        posts = [await get(gp, method="POST", body=b"x") for _ in range(4)]
    assert [r.body for r in gets] == [b"fine"] * 4
    busy_posts = [line for line, _, _ in busy if line.startswith(b"POST")]
    fine_posts = [line for line, _, _ in fine if line.startswith(b"POST")]
    assert sorted(r.status for r in posts) == [200] * len(fine_posts) + [503] * len(busy_posts)
    assert len(busy_posts) + len(fine_posts) == 4  # a POST is never sent twice
    assert busy_posts  # and it was not retried when it got a 503


async def test_a_single_instance_is_not_retried() -> None:
    seen: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    async with (
        backend(answering("busy", seen, status=503)) as port,
        running(config([port], retry=RETRY)) as (gp, _),
    ):
        reply = await get(gp)
    assert reply.status == 503
    assert len(seen) == 1


async def test_the_retry_budget_caps_retries_under_a_total_outage() -> None:
    busy_a: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    busy_b: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    retry = {**RETRY, "budget": {"percent": 10, "min_per_second": 0}}
    async with (
        backend(answering("a", busy_a, 503)) as b1,
        backend(answering("b", busy_b, 503)) as b2,
        running(config([b1, b2], retry=retry)) as (gp, gw),
    ):
        replies = [await get(gp) for _ in range(50)]
        exposition = gw.env.metrics.exposition()[0].decode()
    assert all(r.status == 503 for r in replies)
    upstream = len(busy_a) + len(busy_b)
    assert 50 < upstream <= 55  # at most 10% more, not 3x (attempts: 3)
    assert 'edgeway_upstream_retries_total{reason="status",service="svc"}' in exposition
    assert "edgeway_retry_budget_exhausted_total" in exposition


# --------------------------------------------------------------------------- breakers


async def test_an_open_instance_breaker_takes_it_out_and_it_rejoins_after_the_pause() -> None:
    bad: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    good: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    breaker = {"instance": {"consecutive_failures": 2, "open_for": "300ms"}, "service": None}
    async with (
        backend(answering("bad", bad, 500)) as b1,
        backend(answering("good", good)) as b2,
        running(config([b1, b2], breaker=breaker)) as (gp, gw),
    ):
        first = [await get(gp) for _ in range(4)]
        later = [await get(gp) for _ in range(6)]
        exposition = gw.env.metrics.exposition()[0].decode()
        assert f'edgeway_breaker_state{{instance="127.0.0.1:{b1}",service="svc"}} 2.0' in exposition
        await asyncio.sleep(0.4)
        ready, detail = gw.ready()
        assert ready
        assert detail["services"]["svc"] == 2  # the timer made it half-open: it takes a probe
        probe = await get(gp)
    assert [r.status for r in first] == [500, 200, 500, 200]
    assert [r.status for r in later] == [200] * 6
    assert probe.status in (200, 500)
    assert len(bad) == 2 + (1 if probe.body == b"bad" else 0)


async def test_an_open_service_breaker_fails_fast_with_retry_after() -> None:
    calls = 0

    async def hang(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        await read_request(r)
        calls += 1
        await asyncio.sleep(5)
        w.close()

    breaker = {"instance": None, "service": {"consecutive_failures": 2, "open_for": "30s"}}
    timeouts = {"connect": "1s", "first_byte": "100ms", "total": "1s"}
    async with backend(hang) as port, running(config([port], breaker=breaker, timeouts=timeouts)) as (gp, _):
        timed_out = [await get(gp) for _ in range(2)]
        started = time.monotonic()
        fast = await get(gp)
        elapsed = time.monotonic() - started
    assert [r.status for r in timed_out] == [504, 504]
    assert fast.status == 503
    assert fast.headers[b"content-type"] == b"application/problem+json"
    assert b"circuit breaker" in fast.body
    assert 28 <= int(fast.headers[b"retry-after"]) <= 30
    assert elapsed < 0.1
    assert calls == 2


async def test_every_instance_out_answers_503_with_a_retry_after_hint() -> None:
    breaker = {"instance": {"consecutive_failures": 1, "open_for": "20s"}, "service": None}
    async with running(config([dead_port(), dead_port()], breaker=breaker)) as (gp, gw):
        refused = [await get(gp) for _ in range(2)]
        out = await get(gp)
        assert gw.ready() == (False, {"services": {"svc": 0}})
    assert [r.status for r in refused] == [502, 502]
    assert out.status == 503
    assert b"no available instance" in out.body
    assert 18 <= int(out.headers[b"retry-after"]) <= 20


# --------------------------------------------------------------------------- outlier ejection


async def test_a_failing_instance_is_ejected_but_never_the_last_one() -> None:
    seen_a: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    seen_b: list[tuple[bytes, dict[bytes, bytes], bytes]] = []
    outlier = {"consecutive_failures": 2, "base_ejection_time": "30s", "max_ejection_percent": 100}
    async with (
        backend(answering("a", seen_a, 502)) as b1,
        backend(answering("b", seen_b, 500)) as b2,
        running(config([b1, b2], outlier_ejection=outlier)) as (gp, gw),
    ):
        replies = [await get(gp) for _ in range(12)]
        assert gw.ready()[1]["services"]["svc"] == 1
    assert all(r.status in (500, 502) for r in replies)
    assert min(len(seen_a), len(seen_b)) == 2  # ejected after its second failure
    assert max(len(seen_a), len(seen_b)) == 10  # the other keeps serving


# --------------------------------------------------------------------------- health checks


async def test_active_health_checks_gate_instances_and_readiness() -> None:
    healthy = {"a": True, "b": False}
    served: list[str] = []

    def health_backend(name: str) -> Handler:
        async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            line, headers, _ = await read_request(r)
            if b"/health/ready" in line:
                assert headers[b"user-agent"] == b"edgeway-health-check"
                status = 200 if healthy[name] else 503
            else:
                served.append(name)
                status = 200
            w.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status)
            await w.drain()
            w.close()

        return handler

    check = {"interval": "100ms", "timeout": "100ms", "healthy_threshold": 2, "unhealthy_threshold": 2}
    async with (
        backend(health_backend("a")) as b1,
        backend(health_backend("b")) as b2,
        # No panic, so both instances failing leaves none (test_panic_threshold.py: with it).
        running(config([b1, b2], health_check=check, panic_threshold=0)) as (gp, gw),
    ):
        assert gw.ready()[1]["services"]["svc"] == 1  # decided before the first request
        for _ in range(4):
            assert (await get(gp)).status == 200
        assert served == ["a"] * 4
        healthy["b"] = True
        await asyncio.sleep(0.5)
        assert gw.ready()[1]["services"]["svc"] == 2
        healthy["a"] = healthy["b"] = False
        await asyncio.sleep(0.5)
        assert gw.ready() == (False, {"services": {"svc": 0}})
        assert (await get(gp)).status == 503
        exposition = gw.env.metrics.exposition()[0].decode()
    assert (
        f'edgeway_health_checks_total{{instance="127.0.0.1:{b2}",result="fail",service="svc"}}' in exposition
    )


# --------------------------------------------------------------------------- load shedding


def gated(release: asyncio.Event, seen: list[int]) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        seen.append(1)
        await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await w.drain()
        w.close()

    return handler


@pytest.mark.parametrize("where", ["route", "service"])
async def test_over_the_concurrency_bound_is_503_at_once(where: str) -> None:
    release = asyncio.Event()
    seen: list[int] = []
    bound = {"max_concurrent": 2, "retry_after": "2s"}
    async with backend(gated(release, seen)) as port:
        cfg = (
            config([port], route={"concurrency": bound})
            if where == "route"
            else config([port], concurrency=bound)
        )
        async with running(cfg) as (gp, gw):
            held = [asyncio.create_task(get(gp)) for _ in range(2)]
            while len(seen) < 2:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            shed = await get(gp)
            elapsed = time.monotonic() - started
            release.set()
            done = await asyncio.gather(*held)
            after = await get(gp)
            exposition = gw.env.metrics.exposition()[0].decode()
    assert shed.status == 503
    assert shed.headers[b"retry-after"] == b"2"
    assert elapsed < 0.5
    assert [r.status for r in done] == [200, 200]
    assert after.status == 200
    assert len(seen) == 3
    name = "api" if where == "route" else "svc"
    assert f'edgeway_shed_requests_total{{name="{name}",scope="{where}"}} 1.0' in exposition


async def test_a_bounded_queue_waits_for_a_slot_then_gives_up() -> None:
    release = asyncio.Event()
    seen: list[int] = []
    bound = {"max_concurrent": 1, "queue": 1, "max_wait": "2s"}
    async with (
        backend(gated(release, seen)) as port,
        running(config([port], route={"concurrency": bound})) as (gp, _),
    ):
        first = asyncio.create_task(get(gp))
        while not seen:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(get(gp))
        await asyncio.sleep(0.05)
        refused = await get(gp)  # the queue (one place) is taken
        release.set()
        assert (await first).status == 200
        assert (await queued).status == 200
    assert refused.status == 503
