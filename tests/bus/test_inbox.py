"""Idempotent consumers: effects applied once per message id, in the handler's transaction."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.bus import EventBus, Job, Received
from edgeway.bus.events import Envelope, Event
from edgeway.bus.transport import ChannelConfig

from .conftest import BrokerUnderTest
from .db import Database
from .helpers import eventually, order_events


class NoBatch:
    """A Finish with no batch handlers behind it."""

    async def __call__(self, resource: object, message_ids: Collection[str]) -> None:
        raise AssertionError(f"no job was left to a batch handler, got {list(message_ids)}")


async def test_a_message_delivered_twice_is_applied_once(
    broker: BrokerUnderTest, database: Database, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel)
    calls: list[str] = []

    async def apply(event: Event, session: AsyncSession, ctx: Received) -> None:
        calls.append(ctx.id)
        await session.execute(insert(database.applied), [{"key": event.order_id}])  # type: ignore[attr-defined]

    bus = EventBus(broker.make(), channels=[config])
    bus.add_handler(placed, apply, group="ledger", inbox=database.inbox)
    async with bus:
        envelope = await bus.publish(placed(order_id="o-1"))
        await eventually(lambda: len(calls) == 1, what="first delivery")
        # The broker delivers the same message id again (a redelivery after a lost ack).
        await bus.transport.redeliver(config, "ledger", envelope)
        await bus.transport.redeliver(config, "ledger", envelope)
        await asyncio.sleep(1.0)
    assert await database.applied_keys() == ["o-1"]
    assert calls == [envelope.id]
    assert await database.inbox.processed("ledger", envelope.id)


async def test_a_failing_message_in_a_batch_rolls_back_only_itself(database: Database) -> None:
    async def ok(key: str) -> Callable[[AsyncSession], object]:
        async def call(session: AsyncSession) -> None:
            await session.execute(insert(database.applied), [{"key": key}])

        return call

    async def boom(session: AsyncSession) -> None:
        await session.execute(insert(database.applied), [{"key": "half-written"}])
        raise LookupError("no such customer")

    jobs = [Job("m1", await ok("a")), Job("m2", boom), Job("m3", await ok("c"))]  # type: ignore[arg-type]
    results = await database.inbox.run("g", jobs, NoBatch())
    assert results[0] is None
    assert isinstance(results[1], LookupError)
    assert results[2] is None
    assert sorted(await database.applied_keys()) == ["a", "c"]
    assert not await database.inbox.processed("g", "m2")
    # The same batch again: done ones are skipped, the failed one runs again.
    again = await database.inbox.run("g", jobs, NoBatch())
    assert isinstance(again[1], LookupError)
    assert sorted(await database.applied_keys()) == ["a", "c"]


async def test_the_same_id_is_independent_per_group(database: Database) -> None:
    async def call(session: AsyncSession) -> None:
        await session.execute(insert(database.applied), [{"key": "x"}])

    assert await database.inbox.run("billing", [Job("m1", call)], NoBatch()) == [None]
    assert await database.inbox.run("shipping", [Job("m1", call)], NoBatch()) == [None]
    assert await database.inbox.run("billing", [Job("m1", call)], NoBatch()) == [None]
    assert await database.applied_keys() == ["x", "x"]


async def test_a_batch_handler_gets_the_batch_at_once_and_a_bad_event_is_isolated(
    database: Database, unique: Callable[[str], str]
) -> None:
    from edgeway.bus.dlq import DeadLetters
    from edgeway.bus.memory import MemoryTransport
    from edgeway.bus.transport import Backoff

    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, max_deliver=2, backoff=Backoff(0.01, 2, 0.05))
    sizes: list[int] = []
    transport = MemoryTransport()
    bus = EventBus(transport, channels=[config], batch_size=50)

    @bus.subscribe_batch(placed, group="ledger", inbox=database.inbox)
    async def apply(events: list[Event], session: AsyncSession) -> None:
        sizes.append(len(events))
        if any(e.order_id == "poison" for e in events):  # type: ignore[attr-defined]
            raise ValueError("poison order")
        await session.execute(insert(database.applied), [{"key": e.order_id} for e in events])  # type: ignore[attr-defined]

    await transport.declare(config)
    for i in range(20):
        await transport.publish(await _envelope(placed, "poison" if i == 7 else f"o{i}"))
    async with bus:
        dlq = DeadLetters(transport, config)
        for _ in range(200):
            if await dlq.list():
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        (letter,) = await dlq.list()
    assert sizes[0] == 20  # one call for the whole batch
    assert "ValueError: poison order" in letter.reason
    assert sorted(await database.applied_keys()) == sorted(f"o{i}" for i in range(20) if i != 7)


async def _envelope(event_class: type[Event], order_id: str) -> Envelope:
    from edgeway.bus.events import envelope_for

    return envelope_for(event_class(order_id=order_id))


async def test_batch_and_single_handlers_share_a_group_and_a_repeated_id_in_a_batch_applies_once(
    database: Database, unique: Callable[[str], str]
) -> None:
    from edgeway.bus.events import envelope_for
    from edgeway.bus.memory import MemoryTransport

    placed, cancelled = order_events(unique("orders"))
    config = ChannelConfig(placed.channel)
    transport = MemoryTransport()
    bus = EventBus(transport, channels=[config], batch_size=50)
    batches: list[list[str]] = []
    singles: list[str] = []

    @bus.subscribe_batch(placed, group="ledger", inbox=database.inbox)
    async def apply(events: list[Event], session: AsyncSession) -> None:
        batches.append([e.order_id for e in events])  # type: ignore[attr-defined]
        await session.execute(insert(database.applied), [{"key": e.order_id} for e in events])  # type: ignore[attr-defined]

    @bus.subscribe(cancelled, group="ledger", inbox=database.inbox)
    async def cancel(event: Event, session: AsyncSession) -> None:
        singles.append(event.order_id)  # type: ignore[attr-defined]
        await session.execute(insert(database.applied), [{"key": f"cancel-{event.order_id}"}])  # type: ignore[attr-defined]

    await transport.declare(config)
    await transport.declare_group(config, "ledger")
    twice = envelope_for(placed(order_id="o1"))
    await transport.publish(twice)
    await transport.publish(envelope_for(cancelled(order_id="o0")))
    await transport.redeliver(config, "ledger", twice)  # the same id again, in the same batch
    await transport.publish(envelope_for(placed(order_id="o2")))
    async with bus:
        await eventually(lambda: len(singles) == 1 and sum(map(len, batches)) == 2, what="all handled")
        await asyncio.sleep(0.2)
    assert batches == [["o1", "o2"]]
    assert singles == ["o0"]
    assert sorted(await database.applied_keys()) == ["cancel-o0", "o1", "o2"]
