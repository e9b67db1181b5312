"""Discovery through a running gateway: clusters follow DNS, the NATS KV registry and Consul
without a restart and without failing requests to instances that remain."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from consul_api import Entry, consul_api
from dns_server import DnsServer, dns_server

from conftest import require
from edgeway.discovery import Instance, Registry
from edgeway.gateway.process.serve import GatewayServer
from live_gateway import (
    Backend,
    Client,
    admin_once,
    backends,
    gateway_config,
    once,
    ports,
    route,
    serving,
    write,
)

SRV = "_http._tcp.shop.test."


def srv_zone(*instances: Backend, ttl: int = 1) -> dict[tuple[str, str], tuple[int, list[str]]]:
    zone: dict[tuple[str, str], tuple[int, list[str]]] = {
        (SRV, "SRV"): (ttl, [f"0 10 {b.port} {b.name}.shop.test." for b in instances])
    }
    for b in instances:
        zone[(f"{b.name}.shop.test.", "A")] = (ttl, ["127.0.0.1"])
    return zone


def dns_service(server: DnsServer, **rule: Any) -> dict[str, Any]:
    dns = {"name": SRV, "type": "SRV", "nameservers": [f"127.0.0.1:{server.port}"], "min_ttl": "50ms", **rule}
    return {"discovery": {"dns": dns}}


class Load:
    """Keep-alive clients sending requests in a loop; every answer other than 200 and every
    dropped connection is a failure."""

    def __init__(self, port: int, path: str, clients: int) -> None:
        self.statuses: Counter[int] = Counter()
        self.by_backend: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client(port, path)) for _ in range(clients)]

    async def _client(self, port: int, path: str) -> None:
        client: Client | None = None
        try:
            async with asyncio.timeout(5):
                client = await Client.connect(port)
            while not self._stop.is_set():
                # Bounded: a request that never gets an answer is a failure, not a hang.
                resp = await client.request("GET", path, timeout=5)
                self.statuses[resp.status] += 1
                self.by_backend[resp.headers.get("x-backend", "?")] += 1
        except Exception as exc:
            self.errors.append(repr(exc))
        finally:
            # Closed on every path: a connection left open keeps the gateway's graceful shutdown
            # waiting (a CI run hung 120 s here when a request failed).
            if client is not None:
                await client.close()

    async def stop(self) -> None:
        self._stop.set()
        # Each client finishes its request in flight (at most its 5 s timeout); a client still
        # running after that is cancelled and counted as a failure instead of hanging the test.
        _, pending = await asyncio.wait(self._tasks, timeout=10)
        for task in pending:
            task.cancel()
            self.errors.append("a load client did not stop within 10 s")
        await asyncio.gather(*pending, return_exceptions=True)

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + len(self.errors)


async def until(predicate: Callable[[], bool], timeout: float) -> float:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
    return time.monotonic()


def endpoints(server: GatewayServer, service: str) -> list[int]:
    return sorted(ep.port for ep in server.gateway.clusters[service].endpoints)


async def test_instances_follow_dns_and_those_that_stay_keep_their_connections(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1", "b2", "b3") as be, dns_server(srv_zone(be["b1"], be["b2"])) as dns:
        write(cfg, gateway_config(port, admin, {"shop": dns_service(dns)}, [route("/**", "shop", "1")]))
        async with serving(cfg) as server:
            # The gateway waited for the first answer before serving.
            assert endpoints(server, "shop") == sorted([be["b1"].port, be["b2"].port])
            client = await Client.connect(port)
            for _ in range(4):
                assert (await client.get("/x")).status == 200
            kept = server.gateway.clusters["shop"].endpoints[1]
            assert (be["b1"].accepted, be["b2"].accepted) == (1, 1)
            dns.zone.clear()
            dns.zone.update(srv_zone(be["b2"], be["b3"]))
            await until(lambda: endpoints(server, "shop") == sorted([be["b2"].port, be["b3"].port]), 5)
            assert kept in server.gateway.clusters["shop"].endpoints  # the same endpoint and pool
            before = be["b1"].requests
            answers = Counter([(await client.get("/x")).headers["x-backend"] for _ in range(6)])
            assert answers == {"b2": 3, "b3": 3}
            assert be["b1"].requests == before
            assert be["b2"].accepted == 1  # b2 was not reconnected
            # b1 left: its pooled connection is closed.
            await until(lambda: not be["b1"].connections, 5)
            await client.close()


async def test_a_removed_instance_drains_its_requests_in_flight(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1", "b2") as be, dns_server(srv_zone(be["b1"])) as dns:
        write(cfg, gateway_config(port, admin, {"shop": dns_service(dns)}, [route("/**", "shop", "1")]))
        async with serving(cfg) as server:
            slow = asyncio.create_task(once(port, "GET", "/slow/1"))
            await asyncio.wait_for(be["b1"].slow_started.wait(), 5)
            dns.zone.clear()
            dns.zone.update(srv_zone(be["b2"]))
            await until(lambda: endpoints(server, "shop") == [be["b2"].port], 5)
            assert (await once(port, "GET", "/fast")).headers["x-backend"] == "b2"
            assert be["b1"].connections  # the request in flight still has its connection
            be["b1"].release.set()
            done = await slow
            assert (done.status, done.body) == (200, b"b1 /slow/1")
            await until(lambda: not be["b1"].connections, 5)  # then it is closed


async def test_a_request_in_flight_to_a_removed_instance_keeps_its_timeouts(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1", "b2") as be, dns_server(srv_zone(be["b1"], ttl=0)) as dns:
        svc = {**dns_service(dns), "timeouts": {"first_byte": "1s", "total": "20s"}}
        write(cfg, gateway_config(port, admin, {"shop": svc}, [route("/**", "shop", "1")]))
        async with serving(cfg) as server:
            started = time.monotonic()
            hung = asyncio.create_task(once(port, "GET", "/slow/hangs"))  # b1 never answers it
            await asyncio.wait_for(be["b1"].slow_started.wait(), 5)
            dns.zone.clear()
            dns.zone.update(srv_zone(be["b2"], ttl=0))
            await until(lambda: endpoints(server, "shop") == [be["b2"].port], 5)
            assert not hung.done()  # removed while waiting for its first byte
            answer = await hung
            assert answer.status == 504
            assert time.monotonic() - started < 2.5


async def test_dns_changes_under_load_fail_no_request(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1", "b2", "b3") as be, dns_server(srv_zone(be["b1"], be["b2"], ttl=0)) as dns:
        write(cfg, gateway_config(port, admin, {"shop": dns_service(dns)}, [route("/**", "shop", "1")]))
        async with serving(cfg) as server:
            load = Load(port, "/x", clients=6)
            try:  # stopped whatever happens, or the gateway's shutdown waits for its clients for ever
                sets = [("b2", "b3"), ("b3",), ("b1", "b3"), ("b1", "b2", "b3"), ("b2",)]
                for names in sets:
                    await asyncio.sleep(0.15)
                    dns.zone.clear()
                    dns.zone.update(srv_zone(*(be[n] for n in names), ttl=0))
                    wanted = sorted(be[n].port for n in names)
                    await until(lambda wanted=wanted: endpoints(server, "shop") == wanted, 5)  # type: ignore[misc]
                await asyncio.sleep(0.15)
            finally:
                await load.stop()
    assert load.failed == 0, (load.statuses, load.errors)
    assert set(load.by_backend) == {"b1", "b2", "b3"}
    assert sum(load.statuses.values()) > 100


async def test_readiness_waits_for_a_discovered_instance(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1") as be, dns_server({}) as dns:
        write(cfg, gateway_config(port, admin, {"shop": dns_service(dns)}, [route("/**", "shop", "1")]))
        config_started = time.monotonic()
        async with serving(cfg):
            # DNS answered "no such name": the gateway serves at once, not ready, answering 503.
            assert time.monotonic() - config_started < 2
            assert (await admin_once(admin, "GET", "/readyz")).status == 503
            assert (await once(port, "GET", "/x")).status == 503
            dns.zone.update(srv_zone(be["b1"]))
            async with asyncio.timeout(5):
                while (await admin_once(admin, "GET", "/readyz")).status != 200:
                    await asyncio.sleep(0.05)
            assert (await once(port, "GET", "/x")).body == b"b1 /x"


async def test_static_instances_stay_beside_discovered_ones(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("static", "b1") as be, dns_server(srv_zone(be["b1"])) as dns:
        svc = {"instances": [f"http://127.0.0.1:{be['static'].port}"], **dns_service(dns)}
        write(cfg, gateway_config(port, admin, {"shop": svc}, [route("/**", "shop", "1")]))
        async with serving(cfg) as server:
            await until(lambda: len(endpoints(server, "shop")) == 2, 5)
            dns.zone.clear()  # NXDOMAIN: no discovered instance left
            await until(lambda: endpoints(server, "shop") == [be["static"].port], 5)
            assert (await once(port, "GET", "/x")).body == b"static /x"


@pytest.fixture
async def registry_bucket() -> AsyncIterator[str]:
    require("nats")
    name = f"gw_reg_{uuid.uuid4().hex[:10]}"
    yield name
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        await nc.jetstream().delete_key_value(name)
    finally:
        await nc.close()


async def test_an_instance_that_stops_heartbeating_leaves_the_balancer_within_its_ttl(
    tmp_path: Path, registry_bucket: str
) -> None:
    ttl = 2.0
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    nc = await nats.connect("nats://127.0.0.1:4222")
    try:
        registry = Registry(nc, bucket=registry_bucket, ttl=ttl)
        await registry.open()
        async with backends("b1", "b2") as be:
            regs = {
                n: await registry.register(Instance("shop", f"http://127.0.0.1:{be[n].port}")) for n in be
            }
            rule = {"nats_kv": {"url": "nats://127.0.0.1:4222", "bucket": registry_bucket, "service": "shop"}}
            write(
                cfg, gateway_config(port, admin, {"shop": {"discovery": rule}}, [route("/**", "shop", "1")])
            )
            async with serving(cfg) as server:
                assert endpoints(server, "shop") == sorted(b.port for b in be.values())
                load = Load(port, "/x", clients=4)
                # Stopped whatever happens: clients left looping keep the gateway's graceful
                # shutdown waiting for ever (a CI run hung here when `until` timed out).
                try:
                    await asyncio.sleep(ttl)  # heartbeats keep both
                    assert len(endpoints(server, "shop")) == 2
                    await regs["b2"].stop_heartbeat()  # as if b2 hung or was partitioned away
                    stopped = time.monotonic()
                    left = await until(lambda: endpoints(server, "shop") == [be["b1"].port], ttl + 2)
                    await asyncio.sleep(0.2)  # requests sent to b2 just before it left arrive
                    served_by_b2 = be["b2"].requests
                    await asyncio.sleep(0.3)
                    assert be["b2"].requests == served_by_b2  # out of the balancer
                    # A new registration joins at once.
                    regs["b2"] = await registry.register(
                        Instance("shop", f"http://127.0.0.1:{be['b2'].port}")
                    )
                    await until(lambda: len(endpoints(server, "shop")) == 2, 2)
                finally:
                    await load.stop()
            for reg in regs.values():
                await reg.close()
    finally:
        await nc.close()
    assert left - stopped <= ttl + 0.5  # within the TTL, plus scheduling on a busy machine
    assert load.failed == 0, (load.statuses, load.errors)


async def test_consul_catalog_changes_reach_the_gateway(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1", "b2") as be, consul_api() as api:
        await api.set("shop", [Entry("127.0.0.1", be["b1"].port, tags=["v1"])])
        rule = {"consul": {"url": f"http://127.0.0.1:{api.port}", "service": "shop", "tag": "v1"}}
        write(cfg, gateway_config(port, admin, {"shop": {"discovery": rule}}, [route("/**", "shop", "1")]))
        async with serving(cfg) as server:
            assert (await once(port, "GET", "/x")).body == b"b1 /x"
            started = time.monotonic()
            await api.set(
                "shop",
                [
                    Entry("127.0.0.1", be["b1"].port, tags=["v1"], status="critical"),
                    Entry("127.0.0.1", be["b2"].port, tags=["v1"]),
                ],
            )
            arrived = await until(lambda: endpoints(server, "shop") == [be["b2"].port], 5)
            assert arrived - started < 1.5  # a blocking query, not a poll interval
            assert (await once(port, "GET", "/x")).body == b"b2 /x"


async def test_a_discovered_cluster_survives_a_reload_and_keeps_following(tmp_path: Path) -> None:
    from edgeway.gateway.process.reload import request_reload

    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("b1", "b2") as be, dns_server(srv_zone(be["b1"], ttl=0)) as dns:
        config = gateway_config(port, admin, {"shop": dns_service(dns)}, [route("/**", "shop", "1")])
        write(cfg, config)
        async with serving(cfg) as server:
            cluster = server.gateway.clusters["shop"]
            write(cfg, {**config, "routes": [route("/**", "shop", "2")]})
            assert (await request_reload("127.0.0.1", admin))["services_kept"] == ["shop"]
            assert server.gateway.clusters["shop"] is cluster
            await asyncio.sleep(0.2)  # the old config's discovery has stopped by now
            dns.zone.clear()
            dns.zone.update(srv_zone(be["b2"], ttl=0))
            await until(lambda: endpoints(server, "shop") == [be["b2"].port], 5)
            answer = await once(port, "GET", "/x")
            assert (answer.headers["x-config"], answer.body) == ("2", b"b2 /x")
