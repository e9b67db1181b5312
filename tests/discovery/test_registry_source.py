from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient
from watching import follow

from conftest import require
from edgeway.discovery import Instance, Registry, RegistrySource


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
    assert ttl * 2 / 3 - 0.3 <= left - stopped <= ttl + 0.3
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
