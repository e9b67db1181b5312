from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client as NatsClient

from conftest import require
from edgeway.discovery.registry import Instance, Registry


@pytest.fixture
async def nc() -> AsyncIterator[NatsClient]:
    require("nats")
    client = await nats.connect("nats://127.0.0.1:4222")
    yield client
    await client.close()


@pytest.fixture
async def registry(nc: NatsClient) -> AsyncIterator[Registry]:
    reg = Registry(nc, bucket=f"reg_{uuid.uuid4().hex[:12]}", ttl=2)
    await reg.open()
    yield reg
    await nc.jetstream().delete_key_value(reg.bucket)


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
