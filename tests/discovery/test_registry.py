from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from watching import follow

from conftest import require
from edgeway.discovery import Instance, Registry, RegistrySource
from edgeway.discovery.errors import RegistryError
from edgeway.discovery.registry import Registration


@pytest.fixture
async def nc() -> AsyncIterator[NatsClient]:
    require("nats")
    client = await nats.connect("nats://127.0.0.1:4222")
    yield client
    await client.close()


@pytest.fixture
async def bucket(nc: NatsClient) -> AsyncIterator[str]:
    name = f"reg_{uuid.uuid4().hex[:12]}"
    yield name
    with contextlib.suppress(Exception):  # never created, if the test failed early
        await nc.jetstream().delete_key_value(name)


@pytest.fixture
async def registry(nc: NatsClient, bucket: str) -> Registry:
    reg = Registry(nc, bucket=bucket, ttl=2)
    await reg.open()
    return reg


async def test_registered_instances_are_found_by_service_name(registry: Registry) -> None:
    a = await registry.register(Instance("orders", "http://10.0.0.1:8000", meta={"zone": "a"}))
    b = await registry.register(Instance("orders", "http://10.0.0.2:8000"))
    other = await registry.register(Instance("orders-v2", "http://10.0.0.3:8000"))
    found = await registry.lookup("orders")
    assert [i.url for i in found] == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
    assert found[0].meta == {"zone": "a"}
    assert await registry.lookup("nobody") == []
    for r in (a, b, other):
        await r.close()


async def test_deregistered_instance_disappears_at_once(registry: Registry) -> None:
    reg = await registry.register(Instance("cart", "http://c:1"))
    await reg.close()
    assert await registry.lookup("cart") == []


async def test_heartbeat_keeps_an_instance_beyond_the_ttl(registry: Registry) -> None:
    reg = await registry.register(Instance("pay", "http://p:1"))
    await asyncio.sleep(3.0)  # one and a half TTLs
    assert [i.url for i in await registry.lookup("pay")] == ["http://p:1"]
    await reg.close()


async def test_a_failed_heartbeat_is_tried_again_within_a_second_not_a_whole_interval(
    nc: NatsClient, bucket: str
) -> None:
    # While the registry's stream has no leader (a NATS node died) puts fail; waiting a whole
    # interval (TTL/3) after each failure let live instances age out of the gateways' view.
    registry = Registry(nc, bucket=bucket, ttl=30)  # a heartbeat every 10 s
    await registry.open()
    js = nc.jetstream()
    await js.delete_key_value(bucket)  # every put fails now, as during an election
    with pytest.raises(RegistryError):
        await registry.register(Instance("pay", "http://p:1"))
    reg = await registry.register(Instance("pay", "http://p:2"), keep_trying=True)  # starts anyway
    await asyncio.sleep(0.6)  # a retry or two fail meanwhile
    await js.create_key_value(bucket=bucket, ttl=30)
    started = time.monotonic()
    async with asyncio.timeout(3):  # far less than the 10 s interval
        while [i.url for i in await registry.lookup("pay")] != ["http://p:2"]:
            await asyncio.sleep(0.1)
    assert time.monotonic() - started < 3
    await reg.close()


async def test_instance_that_stops_heartbeating_expires_after_the_ttl(registry: Registry) -> None:
    alive = await registry.register(Instance("inv", "http://alive:1"))
    dead = await registry.register(Instance("inv", "http://dead:1"))
    await dead.stop_heartbeat()  # as if the process was killed
    async with asyncio.timeout(6):
        while len(await registry.lookup("inv")) != 1:
            await asyncio.sleep(0.2)
    assert [i.url for i in await registry.lookup("inv")] == ["http://alive:1"]
    await alive.close()


async def test_names_that_would_break_kv_keys_are_rejected(registry: Registry) -> None:
    with pytest.raises(ValueError, match="service name"):
        await registry.register(Instance("a.b", "http://x"))
    with pytest.raises(ValueError, match="service name"):
        await registry.lookup("a>")


# --------------------------------------------------------------------------- watching


async def test_the_snapshot_then_registrations_and_deregistrations_change_the_set(
    nc: NatsClient, bucket: str
) -> None:
    services = Registry(nc, bucket=bucket, ttl=5)
    await services.open()
    first = await services.register(Instance("orders", "http://10.0.0.1:8000"))
    await services.register(Instance("other", "http://10.0.0.9:8000"))
    source = RegistrySource(Registry(nc, bucket=bucket), "orders")
    async with follow(source) as seen:
        await seen.until(lambda urls: urls == ["http://10.0.0.1:8000"], 5)
        second = await services.register(Instance("orders", "http://10.0.0.2:8000/"))
        await seen.until(lambda urls: urls == ["http://10.0.0.1:8000", "http://10.0.0.2:8000"], 2)
        started = time.monotonic()
        await first.close()  # a clean shutdown deletes the key: gone at once, not after the TTL
        left = await seen.until(lambda urls: urls == ["http://10.0.0.2:8000"], 2)
        assert left - started < 1.0
        await second.close()
        await seen.until(lambda urls: urls == [], 2)


async def test_a_source_of_the_grpc_meta_follows_where_instances_serve_grpc(
    nc: NatsClient, bucket: str
) -> None:
    """``meta="grpc"``: each instance's registered gRPC address, as the gateway writes a gRPC
    service's instances (grpc:// → http://, grpcs:// → https://); one without it is not listed."""
    services = Registry(nc, bucket=bucket, ttl=5)
    await services.open()
    plain = await services.register(
        Instance("inv", "http://10.0.0.1:8000", meta={"grpc": "grpc://10.0.0.1:9000"})
    )
    await services.register(Instance("inv", "http://10.0.0.2:8000", meta={"grpc": "grpcs://10.0.0.2:9000"}))
    await services.register(Instance("inv", "http://10.0.0.3:8000"))  # serves no gRPC
    async with follow(RegistrySource(Registry(nc, bucket=bucket), "inv", meta="grpc")) as seen:
        await seen.until(lambda urls: urls == ["http://10.0.0.1:9000", "https://10.0.0.2:9000"], 5)
        await plain.close()
        await seen.until(lambda urls: urls == ["https://10.0.0.2:9000"], 2)


async def test_an_instance_that_stops_heartbeating_leaves_within_its_ttl(nc: NatsClient, bucket: str) -> None:
    ttl = 2.0
    services = Registry(nc, bucket=bucket, ttl=ttl)
    await services.open()
    alive = await services.register(Instance("inv", "http://alive:1"))
    dead = await services.register(Instance("inv", "http://dead:1"))
    reader = Registry(nc, bucket=bucket)
    async with follow(RegistrySource(reader, "inv")) as seen:
        await seen.until(lambda urls: len(urls) == 2, 5)
        assert reader.ttl == ttl  # adopted from the bucket
        await asyncio.sleep(ttl)  # heartbeats keep both beyond one TTL
        assert seen.latest == ["http://alive:1", "http://dead:1"]
        await dead.stop_heartbeat()  # as if the process was killed
        stopped = time.monotonic()
        left = await seen.until(lambda urls: urls == ["http://alive:1"], ttl + 2)
    # The last heartbeat was at most TTL/3 before the stop; it leaves one TTL after that beat.
    assert ttl * 2 / 3 - 0.3 <= left - stopped <= ttl + 0.5
    await alive.close()


async def test_a_gateway_may_start_before_any_service_created_the_bucket(nc: NatsClient, bucket: str) -> None:
    source = RegistrySource(Registry(nc, bucket=bucket), "orders")
    async with follow(source) as seen:
        await asyncio.sleep(0.3)
        assert seen.sets == []  # the reader never creates the bucket; it keeps asking
        services = Registry(nc, bucket=bucket, ttl=5)
        await services.open()
        reg = await services.register(Instance("orders", "http://10.0.0.1:8000"))
        await seen.until(lambda urls: urls == ["http://10.0.0.1:8000"], 5)
        await reg.close()


async def test_a_resync_rereads_the_bucket_without_losing_instances(nc: NatsClient, bucket: str) -> None:
    services = Registry(nc, bucket=bucket, ttl=5)
    await services.open()
    reg = await services.register(Instance("pay", "http://10.0.0.1:8000"))
    source = RegistrySource(Registry(nc, bucket=bucket), "pay", resync=0.2)
    async with follow(source) as seen:
        await seen.until(bool, 5)
        await asyncio.sleep(1.0)  # several resyncs
        assert [urls for _, urls in seen.sets] == [["http://10.0.0.1:8000"]]
        await reg.close()
        await seen.until(lambda urls: urls == [], 2)


def test_service_names_that_would_break_kv_subjects_are_refused() -> None:
    with pytest.raises(ValueError, match="service name"):
        RegistrySource(Registry(NatsClient(), bucket="b"), "a.b")


async def test_stopping_a_heartbeat_ends_it_even_when_a_put_swallows_the_cancellation() -> None:
    # Python 3.11's asyncio.wait_for (inside nats-py's request) can swallow a cancellation that
    # arrives as the reply does; the put then fails like any other, and a loop that only relied
    # on the cancellation beat on forever: closing the service hung.
    putting = asyncio.Event()

    class SwallowingRegistry:
        ttl = 0.3

        async def _put(self, instance: Instance) -> None:
            putting.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise RegistryError("cancelled, then swallowed") from None

    registration = Registration(SwallowingRegistry(), Instance("inv", "http://x:1"))  # type: ignore[arg-type]
    registration.start()
    await asyncio.wait_for(putting.wait(), 2)
    async with asyncio.timeout(2):
        await registration.stop_heartbeat()


class _GoesSilent:
    """A KV watcher whose consumer's server died after the snapshot: nothing more arrives."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._snapshot_done = False

    def __aiter__(self) -> _GoesSilent:
        return self

    async def __anext__(self) -> Any:
        if self._snapshot_done:
            await asyncio.Event().wait()  # silent forever, as a watch on a dead server is
        entry = await self._real.__anext__()
        if entry is None:
            self._snapshot_done = True
        return entry

    async def stop(self) -> None:
        await self._real.stop()


async def test_a_watch_that_goes_silent_is_renewed_before_live_instances_are_dropped(
    nc: NatsClient, bucket: str
) -> None:
    # Both gateways of the cluster rehearsal dropped every live catalog and inventory instance
    # 11 s after a NATS server died: their watches' consumers had lived on that server, the
    # heartbeats went on into the replicated bucket, and the silent watch read as no heartbeats.
    ttl = 2.0
    services = Registry(nc, bucket=bucket, ttl=ttl)
    await services.open()
    alive = await services.register(Instance("inv", "http://alive:1"))
    reader = Registry(nc, bucket=bucket)
    await reader.open(create=False)
    real_watch = reader.kv.watch
    calls = 0

    async def watch(keys: str, **options: Any) -> Any:
        nonlocal calls
        calls += 1
        real = await real_watch(keys, **options)
        return _GoesSilent(real) if calls == 1 else real

    reader.kv.watch = watch  # type: ignore[method-assign,assignment]
    async with follow(RegistrySource(reader, "inv")) as seen:
        await seen.until(lambda urls: urls == ["http://alive:1"], 5)
        await asyncio.sleep(ttl * 2.5)  # past the first watch's expiry deadline, twice
        assert [urls for _, urls in seen.sets] == [["http://alive:1"]]
    assert calls >= 2  # the silent watch was replaced
    await alive.close()
