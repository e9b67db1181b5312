"""The gateway's metrics, read from its admin port's /metrics over real sockets: every family
counts what happened, number by number (requests per route, method and status; calls and
attempts per service and instance; retries; breaker, health and ejection states; rate-limit and
cache decisions; open connections and WebSocket tunnels)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import dead_port
from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits
from edgeway.http.listener import Listener, bind_socket
from live_gateway import Client, admin_once, gateway_config, once, ports, serving, write

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class StatusBackend(Listener):
    """Answers ``/status/<code>`` with that status, anything else 200; counts requests."""

    def __init__(self) -> None:
        super().__init__(self.handle, ServerLimits())
        self.requests = 0
        self.instance = ""  # host:port, the instance label, once started

    async def handle(self, ex: Exchange) -> None:
        self.requests += 1
        path = ex.path.decode()
        status = int(path.rsplit("/", 1)[1]) if path.startswith("/status/") else 200
        ex.respond(status, [(b"content-type", b"text/plain"), (b"cache-control", b"max-age=60")], b"ok")


@contextlib.asynccontextmanager
async def status_backends(n: int) -> AsyncIterator[list[StatusBackend]]:
    started: list[StatusBackend] = []
    try:
        for _ in range(n):
            backend = StatusBackend()
            await backend.start(bind_socket("127.0.0.1", 0, reuse_port=False))
            backend.instance = f"127.0.0.1:{backend.port}"
            started.append(backend)
        yield started
    finally:
        for backend in started:
            await backend.shutdown(1.0)


async def scrape(admin: int) -> Samples:
    response = await admin_once(admin, "GET", "/metrics")
    assert response.status == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels; 0 when absent."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextlib.asynccontextmanager
async def gateway(
    tmp_path: Path, services: dict[str, Any], routes: list[dict[str, Any]], **top: Any
) -> AsyncIterator[tuple[int, int]]:
    port, admin = ports()
    path = tmp_path / "gw.yaml"
    write(path, gateway_config(port, admin, services, routes, **top))
    async with serving(path):
        yield port, admin


def url(backend: StatusBackend) -> str:
    return f"http://{backend.instance}"


async def test_requests_are_counted_per_route_method_and_status_with_their_latency(tmp_path: Path) -> None:
    async with (
        status_backends(1) as (backend,),
        gateway(
            tmp_path,
            {"api": {"instances": [url(backend)]}},
            [
                {
                    "id": "api",
                    "match": {"path": "/api/**"},
                    "proxy": {"service": "api", "strip_prefix": "/api"},
                },
                {"id": "other", "match": {"path": "/other"}, "proxy": {"service": "api"}},
            ],
        ) as (port, admin),
    ):
        client = await Client.connect(port)
        for _ in range(5):
            assert (await client.get("/api/x")).status == 200
        for _ in range(2):
            assert (await client.get("/api/status/503")).status == 503
        assert (await client.request("POST", "/api/x")).status == 200
        assert (await client.get("/nowhere")).status == 404
        await client.close()
        samples = await scrape(admin)
    requests = "http_server_requests_total"
    assert value(samples, requests, method="GET", route="api", status="200") == 5
    assert value(samples, requests, method="GET", route="api", status="503") == 2
    assert value(samples, requests, method="POST", route="api", status="200") == 1
    assert value(samples, requests, method="GET", route="<unmatched>", status="404") == 1
    assert value(samples, requests, method="GET", route="other", status="200") == 0
    duration = "http_server_request_duration_seconds"
    assert value(samples, duration + "_count", method="GET", route="api") == 7
    assert value(samples, duration + "_bucket", method="GET", route="api", le="+Inf") == 7
    assert 0 < value(samples, duration + "_sum", method="GET", route="api") < 7 * 10
    # the service's calls and the instance's attempts, by outcome
    instance = backend.instance
    assert value(samples, "edgeway_gateway_upstream_calls_total", service="api", outcome="2xx") == 6
    assert value(samples, "edgeway_gateway_upstream_calls_total", service="api", outcome="5xx") == 2
    attempts = "edgeway_gateway_upstream_attempts_total"
    assert value(samples, attempts, service="api", instance=instance, outcome="2xx") == 6
    assert value(samples, attempts, service="api", instance=instance, outcome="5xx") == 2
    assert value(samples, "edgeway_gateway_upstream_call_duration_seconds_count", service="api") == 8
    assert (
        value(
            samples,
            "edgeway_gateway_upstream_attempt_duration_seconds_count",
            service="api",
            instance=instance,
        )
        == 8
    )
    assert backend.requests == 8


async def test_attempts_and_retries_per_instance_with_a_dead_one(tmp_path: Path) -> None:
    dead = dead_port()
    async with (
        status_backends(1) as (alive,),
        gateway(
            tmp_path,
            {
                "api": {
                    "instances": [f"http://127.0.0.1:{dead}", url(alive)],
                    "balancer": "round_robin",
                    "retry": {
                        "attempts": 2,
                        "backoff": "1ms",
                        "budget": {"percent": 100, "min_per_second": 100},
                    },
                }
            },
            [{"id": "api", "match": {"path": "/**"}, "proxy": {"service": "api"}}],
        ) as (port, admin),
    ):
        for _ in range(4):
            assert (await once(port, "GET", "/x")).status == 200
        samples = await scrape(admin)
    attempts = "edgeway_gateway_upstream_attempts_total"
    # Round robin sends every other call to the dead instance first; each of those is retried.
    failed = value(samples, attempts, service="api", instance=f"127.0.0.1:{dead}", outcome="error")
    assert failed >= 1
    assert value(samples, attempts, service="api", instance=alive.instance, outcome="2xx") == 4
    assert value(samples, "edgeway_upstream_retries_total", service="api", reason="error") == failed
    assert value(samples, "edgeway_gateway_upstream_calls_total", service="api", outcome="2xx") == 4
    assert alive.requests == 4


async def test_breaker_health_and_ejection_states_are_gauges(tmp_path: Path) -> None:
    async with (
        status_backends(2) as (good, bad),
        gateway(
            tmp_path,
            {
                "broken": {
                    "instances": [url(bad)],
                    "breaker": {"instance": {"consecutive_failures": 2, "open_for": "30s"}},
                },
                "flaky": {
                    "instances": [url(good), url(bad)],
                    "balancer": "round_robin",
                    "health_check": {
                        "path": "/status/500",
                        "interval": "50ms",
                        "timeout": "50ms",
                        "unhealthy_threshold": 1,
                    },
                },
            },
            [
                {
                    "id": "broken",
                    "match": {"path": "/broken/**"},
                    "proxy": {"service": "broken", "strip_prefix": "/broken"},
                },
                {
                    "id": "flaky",
                    "match": {"path": "/flaky/**"},
                    "proxy": {"service": "flaky", "strip_prefix": "/flaky"},
                },
            ],
        ) as (port, admin),
    ):
        for _ in range(2):
            assert (await once(port, "GET", "/broken/status/500")).status == 500
        await asyncio.sleep(0.3)  # a few health-check rounds
        samples = await scrape(admin)
    bad_instance, good_instance = bad.instance, good.instance
    assert value(samples, "edgeway_breaker_state", service="broken", instance=bad_instance) == 2  # open
    assert (
        value(
            samples, "edgeway_breaker_transitions_total", service="broken", instance=bad_instance, to="open"
        )
        == 1
    )
    assert value(samples, "edgeway_instance_available", service="broken", instance=bad_instance) == 0
    # /status/500 fails every instance's health check
    assert value(samples, "edgeway_instance_healthy", service="flaky", instance=good_instance) == 0
    # ... so none of them is healthy: the service is in panic and both take traffic anyway.
    assert value(samples, "edgeway_upstream_panic", service="flaky") == 1
    assert value(samples, "edgeway_instance_available", service="flaky", instance=good_instance) == 1
    assert value(samples, "edgeway_upstream_panic", service="broken") == 0  # breakers never panic
    assert (
        value(samples, "edgeway_health_checks_total", service="flaky", instance=good_instance, result="fail")
        >= 1
    )


async def test_an_outlier_ejection_shows_in_its_gauge(tmp_path: Path) -> None:
    async with (
        status_backends(2) as (good, bad),
        gateway(
            tmp_path,
            {
                "api": {
                    "instances": [url(good), url(bad)],
                    "balancer": "round_robin",
                    "outlier_ejection": {
                        "consecutive_failures": 1,
                        "base_ejection_time": "30s",
                        "max_ejection_percent": 50,
                    },
                }
            },
            [{"id": "api", "match": {"path": "/**"}, "proxy": {"service": "api"}}],
        ) as (port, admin),
    ):
        # The good instance answers 500 only to /status/500, as does the bad one: send to both
        # until the bad one has failed once (round robin alternates).
        statuses = [(await once(port, "GET", "/status/500")).status for _ in range(2)]
        assert statuses == [500, 500]
        samples = await scrape(admin)
    ejected = [
        value(samples, "edgeway_instance_ejected", service="api", instance=b.instance) for b in (good, bad)
    ]
    assert sorted(ejected) == [0, 1]  # one of the two, not both (max_ejected_percent: 50)
    assert (
        sum(
            value(samples, "edgeway_outlier_ejections_total", service="api", instance=b.instance)
            for b in (good, bad)
        )
        == 1
    )


async def test_rate_limit_and_cache_decisions_are_counted(tmp_path: Path) -> None:
    async with (
        status_backends(1) as (backend,),
        gateway(
            tmp_path,
            {"api": {"instances": [url(backend)]}},
            [
                {
                    "id": "limited",
                    "match": {"path": "/limited"},
                    "proxy": {"service": "api"},
                    "rate_limit": {"rate": 2, "per": "1h", "key": "ip"},
                },
                {
                    "id": "cached",
                    "match": {"path": "/cached"},
                    "proxy": {"service": "api"},
                    "cache": {"ttl": "60s"},
                },
            ],
        ) as (port, admin),
    ):
        statuses = [(await once(port, "GET", "/limited")).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        for _ in range(3):
            assert (await once(port, "GET", "/cached")).status == 200
        samples = await scrape(admin)
    decisions = "edgeway_gateway_ratelimit_decisions_total"
    assert value(samples, decisions, route="limited", decision="allowed") == 2
    assert value(samples, decisions, route="limited", decision="limited") == 1
    assert value(samples, "edgeway_gateway_cache_requests_total", route="cached", result="miss") == 1
    assert value(samples, "edgeway_gateway_cache_requests_total", route="cached", result="hit") == 2
    assert backend.requests == 3  # two let through by the limit, one cache miss


async def test_open_connections_and_websocket_tunnels_are_gauges(tmp_path: Path) -> None:
    upgraded = asyncio.Event()

    async def websocket_backend(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
            b"sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        )
        await w.drain()
        upgraded.set()
        await r.read()  # until the gateway closes the tunnel
        w.close()

    server = await asyncio.start_server(websocket_backend, "127.0.0.1", 0)
    ws_port = server.sockets[0].getsockname()[1]
    try:
        async with (
            status_backends(1) as (backend,),
            gateway(
                tmp_path,
                {"api": {"instances": [url(backend)]}, "ws": {"instances": [f"http://127.0.0.1:{ws_port}"]}},
                [
                    {"id": "api", "match": {"path": "/**"}, "proxy": {"service": "api"}},
                    {"id": "ws", "match": {"path": "/ws"}, "proxy": {"service": "ws", "websocket": True}},
                ],
            ) as (port, admin),
        ):
            clients = [await Client.connect(port) for _ in range(3)]
            for client in clients:
                assert (await client.get("/x")).status == 200
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(
                b"GET /ws HTTP/1.1\r\nhost: gw\r\nupgrade: websocket\r\nconnection: upgrade\r\n"
                b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
            await asyncio.wait_for(upgraded.wait(), 5)
            during = await scrape(admin)
            w.close()
            for client in clients:
                await client.close()
            for _ in range(100):  # the gateway sees the closes on its next loop turns
                after = await scrape(admin)
                if value(after, "edgeway_gateway_websocket_tunnels", service="ws") == 0 and (
                    value(after, "edgeway_gateway_connections", listener="traffic") == 0
                ):
                    break
                await asyncio.sleep(0.02)
    finally:
        server.close()
    assert value(during, "edgeway_gateway_connections", listener="traffic") == 4  # 3 clients + the tunnel
    assert value(during, "edgeway_gateway_websocket_tunnels", service="ws") == 1
    assert value(during, "http_server_requests_in_flight") == 1  # the tunnel's request
    assert value(after, "edgeway_gateway_websocket_tunnels", service="ws") == 0
    assert value(after, "edgeway_gateway_connections", listener="traffic") == 0
    assert value(after, "http_server_requests_in_flight") == 0


@pytest.mark.parametrize("enabled", [False])
async def test_metrics_off_exports_no_request_families(tmp_path: Path, enabled: bool) -> None:
    async with (
        status_backends(1) as (backend,),
        gateway(
            tmp_path,
            {"api": {"instances": [url(backend)]}},
            [{"id": "api", "match": {"path": "/**"}, "proxy": {"service": "api"}}],
            telemetry={"metrics": {"enabled": enabled}},
        ) as (port, admin),
    ):
        assert (await once(port, "GET", "/x")).status == 200
        samples = await scrape(admin)
    names = {name for name, _ in samples}
    assert "http_server_requests_total" not in names
    assert "edgeway_gateway_upstream_attempts_total" not in names
    assert value(samples, "edgeway_gateway_connections", listener="traffic") == 0


TOTAL = "http_server_requests_total"
ALL_200 = {"method": "GET", "route": "all", "status": "200"}


async def until(condition: Callable[[Samples], bool], admin: int, seconds: float) -> None:
    """Scrape until one scrape meets ``condition``; AssertionError after ``seconds``."""
    deadline = asyncio.get_running_loop().time() + seconds
    last: Samples = {}
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(OSError, AssertionError, asyncio.IncompleteReadError, TimeoutError):
            last = await scrape(admin)
            if condition(last):
                return
        await asyncio.sleep(0.05)
    workers, total = value(last, "edgeway_gateway_workers"), value(last, TOTAL, **ALL_200)
    raise AssertionError(
        f"not within {seconds:g} s: the last scrape added up {workers:g} workers, {total:g} requests"
    )


async def test_a_multi_worker_gateway_answers_the_sum_of_its_workers(tmp_path: Path) -> None:
    """Each scrape lands on one worker (they share the admin port); every one answers the total."""
    async with status_backends(1) as (backend,):
        port, admin = ports()
        path = tmp_path / "gw.yaml"
        config = gateway_config(
            port,
            admin,
            {"api": {"instances": [url(backend)]}},
            [{"id": "all", "match": {"path": "/**"}, "proxy": {"service": "api"}}],
        )
        write(path, config)
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(path), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Both workers up: every scrape adds up two expositions. A deadline, not a count of
            # tries: two workers starting on a loaded 2-core machine took over 15 s of scrapes.
            await until(lambda samples: value(samples, "edgeway_gateway_workers") == 2, admin, 60)
            for _ in range(40):  # a connection each: the kernel spreads them over the workers
                assert (await once(port, "GET", "/x")).status == 200
            # A worker counts a request once its response is written, so the other worker may
            # not have counted its last one by the first scrape: wait for the sum, then every
            # later scrape must hold it.
            await until(lambda samples: value(samples, TOTAL, **ALL_200) == 40, admin, 30)
            scrapes: list[Samples] = []
            for _ in range(30):
                samples = await scrape(admin)
                # A peer that does not answer within 2 s (a worker the loaded machine did not
                # schedule) drops out of the sum, and the scrape says so: one worker. Only a
                # scrape of both workers claims the whole sum.
                if value(samples, "edgeway_gateway_workers") == 2:
                    scrapes.append(samples)
                if len(scrapes) == 8:
                    break
            assert len(scrapes) == 8, f"only {len(scrapes)} of 30 scrapes added up both workers"
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 15)
    assert backend.requests == 40
    for samples in scrapes:
        assert value(samples, "edgeway_gateway_workers") == 2
        assert value(samples, TOTAL, **ALL_200) == 40
        assert value(samples, "http_server_request_duration_seconds_count", method="GET", route="all") == 40
        assert (
            value(
                samples,
                "edgeway_gateway_upstream_attempts_total",
                service="api",
                instance=backend.instance,
                outcome="2xx",
            )
            == 40
        )
    assert proc.returncode == 0
