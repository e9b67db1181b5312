"""Bus metrics: what each counter counts, the outbox backlog gauge, and exposure at the kit's /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.events import Event, envelope_for
from edgeway.bus.memory import MemoryBroker, MemoryTransport
from edgeway.bus.outbox import OutboxRelay
from edgeway.bus.transport import Backoff, ChannelConfig, Expiry
from edgeway.observability.metrics import Metrics
from edgeway.service import ServiceSettings, create_app

from .db import close_database, open_database
from .helpers import eventually, order_events


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_each_outcome_of_a_delivery_is_counted_per_channel_and_group(
    unique: Callable[[str], str],
) -> None:
    placed, _ = order_events(unique("orders"))
    channel = placed.channel
    config = ChannelConfig(
        channel, ttl=30, on_expiry=Expiry.DEAD_LETTER, max_deliver=2, backoff=Backoff(0.05, 1.0, 0.05)
    )
    metrics = Metrics("billing")
    handled: list[str] = []
    attempts: dict[str, int] = {}

    async def bill(event: Event, ctx: Received) -> None:
        order_id: str = event.order_id  # type: ignore[attr-defined]
        attempts[order_id] = ctx.attempt
        if order_id == "flaky" and ctx.attempt == 1:
            raise ConnectionError("payment provider timed out")
        if order_id == "broken":
            raise ValueError("no such customer")
        handled.append(order_id)

    bus = EventBus(MemoryTransport(MemoryBroker()), channels=[config], metrics=metrics)
    bus.add_handler(placed, bill, group="billing")
    async with bus:
        for order_id in ("a", "b", "flaky", "broken"):
            await bus.publish(placed(order_id=order_id))
        stale = envelope_for(placed(order_id="stale"))
        await bus.publish_envelope(replace(stale, time=time.time() - 60))
        garbage = envelope_for(placed(order_id="x"))
        await bus.publish_envelope(replace(garbage, payload=b'{"order_id": 42}'))
        await eventually(lambda: sorted(handled) == ["a", "b", "flaky"], what="three handled")
        await eventually(lambda: attempts.get("broken") == 2, what="two attempts of the broken one")
        await asyncio.sleep(0.1)

    group = {"channel": channel, "group": "billing"}
    assert sample(metrics, "edgeway_bus_published_total", channel=channel) == 6
    assert sample(metrics, "edgeway_bus_consumed_total", **group) == 3
    assert sample(metrics, "edgeway_bus_failed_total", **group) == 3  # flaky once, broken twice
    assert sample(metrics, "edgeway_bus_retried_total", **group) == 2  # flaky and broken, once each
    assert sample(metrics, "edgeway_bus_expired_total", **group) == 1
    dead = {reason: sample(metrics, "edgeway_bus_dead_lettered_total", **group, reason=reason) for reason in (
        "failed", "invalid", "expired", "unacknowledged")}  # fmt: skip
    assert dead == {"failed": 1, "invalid": 1, "expired": 1, "unacknowledged": 0}
    runs = sample(metrics, "edgeway_bus_handling_seconds_count", **group)
    assert runs >= 2  # the first batch, then the retries (failed runs count too)
    assert sample(metrics, "edgeway_bus_handling_seconds_sum", **group) > 0


async def test_a_batch_counts_its_consumed_events_in_one_step(unique: Callable[[str], str]) -> None:
    placed, _ = order_events(unique("orders"))
    metrics = Metrics("billing")
    got: list[int] = []

    async def bill(events: list[Event]) -> None:
        got.append(len(events))

    transport = MemoryTransport(MemoryBroker())
    publisher = EventBus(transport, channels=[ChannelConfig(placed.channel)])
    async with publisher:
        await publisher.transport.declare(ChannelConfig(placed.channel))
        await publisher.transport.declare_group(ChannelConfig(placed.channel), "billing")
        await publisher.publish_envelopes([envelope_for(placed(order_id=f"o{i}")) for i in range(250)])
    bus = EventBus(transport, channels=[ChannelConfig(placed.channel)], batch_size=100, metrics=metrics)
    bus.add_handler(placed, bill, group="billing", batch=True)
    async with bus:
        await eventually(lambda: sum(got) == 250, what="250 events")
    labels = {"channel": placed.channel, "group": "billing"}
    assert sample(metrics, "edgeway_bus_consumed_total", **labels) == 250
    assert sample(metrics, "edgeway_bus_handling_seconds_count", **labels) == len(got) == 3


async def test_the_relay_reports_the_outbox_backlog(tmp_path: Path, unique: Callable[[str], str]) -> None:
    placed, _ = order_events(unique("orders"))
    database = await open_database("sqlite", str(tmp_path))
    metrics = Metrics("orders")
    bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)], metrics=metrics)
    relay = OutboxRelay(database.outbox, database.sessions, bus, batch_size=4)
    outbox = database.outbox.table.name
    try:
        async with database.sessions() as session, session.begin():
            await database.outbox.add_many(session, [placed(order_id=f"o{i}") for i in range(10)])
        assert await relay.count_backlog() == 10
        assert relay.backlog() == 10.0
        assert sample(metrics, "edgeway_bus_outbox_backlog", outbox=outbox) == 10
        async with bus:
            relay.start()
            await eventually(lambda: relay.published == 10, what="10 published")
            await eventually(lambda: relay.backlog() == 0, what="the backlog counted again")
            await relay.stop()
        assert sample(metrics, "edgeway_bus_outbox_backlog", outbox=outbox) == 0
        assert sample(metrics, "edgeway_bus_published_total", channel=placed.channel) == 10
    finally:
        await close_database(database)


async def test_bus_metrics_are_served_at_the_service_kits_metrics_endpoint(
    unique: Callable[[str], str],
) -> None:
    placed, _ = order_events(unique("orders"))
    app = create_app("orders", settings=ServiceSettings(), configure_logging=False, access_log=False)
    kit = app.state.kit
    bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)], metrics=kit.metrics)
    async with bus:
        await bus.publish(placed(order_id="o-1"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as http:
        body = (await http.get("/metrics")).text
    assert f'edgeway_bus_published_total{{channel="{placed.channel}"}} 1.0' in body
    assert "# TYPE edgeway_bus_handling_seconds histogram" in body
    assert "# TYPE edgeway_bus_outbox_backlog gauge" in body
