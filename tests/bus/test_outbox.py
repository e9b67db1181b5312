"""Transactional outbox and relay, on SQLite and PostgreSQL, against memory and real brokers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.errors import PublishError
from edgeway.bus.events import Envelope, Event
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.outbox import OutboxRelay, _runs
from edgeway.bus.transport import ChannelConfig

from .conftest import BrokerUnderTest
from .db import Database
from .helpers import eventually, order_events


class Faulty:
    """Delegates to a real transport; publish_batch publishes ``fail_after`` rows then fails or hangs."""

    def __init__(self, inner: Any, fail_after: int, mode: str) -> None:
        self.inner = inner
        self.fail_after = fail_after
        self.mode = mode
        self.armed = True
        self.published: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
        if self.armed:
            self.armed = False
            head = list(envelopes[: self.fail_after])
            await self.inner.publish_batch(head)
            self.published += [e.id for e in head]
            if self.mode == "hang":
                await asyncio.sleep(3600)  # the relay gets killed here
            raise PublishError(envelopes[self.fail_after].id, "connection reset by peer")
        await self.inner.publish_batch(envelopes)
        self.published += [e.id for e in envelopes]


async def _add_orders(db: Database, placed: type[Event], count: int, start: int = 0) -> None:
    async with db.sessions() as session, session.begin():
        for i in range(start, start + count):
            await session.execute(insert(db.applied), [{"key": f"state-{i}"}])
            await db.outbox.add(session, placed(order_id=f"o{i}"))


async def _applied_orders(database: Database, count: int) -> bool:
    return len({k for k in await database.applied_keys() if not k.startswith("state-")}) == count


async def test_an_event_added_in_a_rolled_back_transaction_is_never_published(
    database: Database, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    bus = EventBus(MemoryTransport())
    relay = OutboxRelay(database.outbox, database.sessions, bus)

    async def place_order_then_fail() -> None:
        async with database.sessions() as session, session.begin():
            await database.outbox.add(session, placed(order_id="ghost"))
            raise ZeroDivisionError("the business code fails after adding the event")

    with pytest.raises(ZeroDivisionError):
        await place_order_then_fail()
    async with bus:
        assert await relay.relay_once() == 0


async def test_the_relay_publishes_pending_rows_in_order_and_marks_them_sent(
    database: Database, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.order_id)  # type: ignore[attr-defined]

    bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)])
    bus.add_handler(placed, handle, group="g")
    relay = OutboxRelay(database.outbox, database.sessions, bus, batch_size=7)
    await _add_orders(database, placed, 30)
    async with bus:
        relay.start()
        # Delivered is not yet marked sent (the relay marks after the broker confirmed): wait for
        # the relay to count them, which it does after its commit.
        await eventually(lambda: len(seen) == 30 and relay.published == 30, what="30 events sent")
        await relay.stop()
        async with database.sessions() as session:
            assert await database.outbox.pending(session) == 0
    assert seen == [f"o{i}" for i in range(30)]


@pytest.mark.parametrize("mode", ["fail", "hang"])
async def test_a_relay_that_fails_or_dies_mid_batch_loses_nothing_and_applies_nothing_twice(
    broker: BrokerUnderTest, database: Database, unique: Callable[[str], str], mode: str
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel)
    deliveries: list[str] = []

    async def apply(event: Event, session: AsyncSession, ctx: Received) -> None:
        deliveries.append(ctx.id)
        await session.execute(insert(database.applied), [{"key": event.order_id}])  # type: ignore[attr-defined]

    faulty = Faulty(broker.make(), fail_after=10, mode=mode)
    bus = EventBus(faulty, channels=[config])
    bus.add_handler(placed, apply, group="ledger", inbox=database.inbox)
    await _add_orders(database, placed, 25)
    async with bus:
        first = OutboxRelay(database.outbox, database.sessions, bus, batch_size=25)
        if mode == "fail":
            with pytest.raises(PublishError):
                await first.relay_once()
        else:
            task = asyncio.create_task(first.relay_once())
            await eventually(lambda: len(faulty.published) == 10, what="half a batch published")
            task.cancel()  # the relay process dies after the broker took 10 of 25
            with pytest.raises(asyncio.CancelledError):
                await task
        second = OutboxRelay(database.outbox, database.sessions, bus, batch_size=25)
        assert await second.relay_once() == 25  # every row was still pending: republished
        # Committed, not just handled (the handler runs before its batch commits); then a while
        # for a second delivery of any of them to show up, if there were one.
        await eventually(lambda: _applied_orders(database, 25), what="25 distinct events committed")
        await asyncio.sleep(0.5)
    keys = [k for k in await database.applied_keys() if not k.startswith("state-")]
    assert Counter(keys) == Counter(f"o{i}" for i in range(25))  # applied exactly once each
    if broker.kind != "rabbitmq":
        # NATS (and memory) drop the re-published ids in the duplicate window: not even delivered twice.
        assert len(deliveries) == 25


async def test_two_relays_on_postgresql_never_publish_a_row_twice(
    database: Database, unique: Callable[[str], str]
) -> None:
    if database.kind != "postgres":
        pytest.skip("SKIP LOCKED is the PostgreSQL path; SQLite runs one relay per database")
    placed, _ = order_events(unique("orders"))
    published: list[str] = []

    class Recording(MemoryTransport):
        async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
            published.extend(e.id for e in envelopes)
            await asyncio.sleep(0.01)  # hold the row locks while the other relay runs
            await super().publish_batch(envelopes)

    bus = EventBus(Recording())
    await _add_orders(database, placed, 400)
    relays = [OutboxRelay(database.outbox, database.sessions, bus, batch_size=50) for _ in range(2)]
    async with bus:

        async def drain(relay: OutboxRelay) -> None:
            while await relay.relay_once():
                pass

        await asyncio.gather(*(drain(r) for r in relays))
    assert len(published) == 400
    assert len(set(published)) == 400
    assert relays[0].published > 0
    assert relays[1].published > 0


async def _sent_at(database: Database) -> dict[int, float | None]:
    table = database.outbox.table
    async with database.sessions() as session:
        rows = await session.execute(select(table.c.id, table.c.sent_at).order_by(table.c.id))
        return dict(rows.tuples().all())


async def _set_sent_at(database: Database, ids: Sequence[int], sent_at: float | None) -> None:
    table = database.outbox.table
    async with database.sessions() as session, session.begin():
        await session.execute(update(table).where(table.c.id.in_(ids)).values(sent_at=sent_at))


def test_ids_are_marked_by_runs_of_consecutive_integers() -> None:
    assert _runs([]) == []
    assert _runs([5]) == [{"first": 5, "last": 5}]
    assert _runs([1, 2, 3, 7, 8, 10]) == [
        {"first": 1, "last": 3},
        {"first": 7, "last": 8},
        {"first": 10, "last": 10},
    ]


async def test_the_relay_marks_exactly_the_rows_it_published_around_rows_sent_before(
    database: Database, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    await _add_orders(database, placed, 12)
    ids = sorted(await _sent_at(database))
    await _set_sent_at(database, ids[3:5], 1.0)  # sent long ago by another relay: a gap in the batch
    published: list[str] = []

    class Recording(MemoryTransport):
        async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
            published.extend(e.id for e in envelopes)

    relay = OutboxRelay(database.outbox, database.sessions, EventBus(Recording()), batch_size=100)
    async with relay.bus:
        assert await relay.relay_once() == 10
        assert await relay.relay_once() == 0
    sent = await _sent_at(database)
    assert [sent[i] for i in ids[3:5]] == [1.0, 1.0]  # untouched: not part of this batch
    assert all(sent[i] is not None and sent[i] > 1.0 for i in ids[:3] + ids[5:])  # type: ignore[operator]
    assert len(published) == 10


async def test_purge_deletes_rows_sent_before_keep_sent_from_the_oldest_and_stops_at_one_that_stays(
    database: Database, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    await _add_orders(database, placed, 12)
    ids = sorted(await _sent_at(database))
    now = time.time()
    await _set_sent_at(database, ids[:4], now - 7200)  # old enough
    await _set_sent_at(database, ids[4:5], now - 60)  # sent a minute ago: stays
    await _set_sent_at(database, ids[5:8], now - 7200)  # old, but behind one that stays
    # ids[8:] unsent
    relay = OutboxRelay(database.outbox, database.sessions, EventBus(MemoryTransport()), keep_sent=3600)
    assert await relay.purge() == 4
    assert sorted(await _sent_at(database)) == ids[4:]
    await _set_sent_at(database, ids[4:5], now - 7200)
    assert await relay.purge() == 4  # the row that stayed is old now: it and the three behind it go
    assert sorted(await _sent_at(database)) == ids[8:]  # unsent rows are never purged
    assert await relay.purge() == 0
    assert await OutboxRelay(database.outbox, database.sessions, relay.bus, keep_sent=None).purge() == 0


async def test_purge_walks_more_rows_than_one_chunk(database: Database, unique: Callable[[str], str]) -> None:
    placed, _ = order_events(unique("orders"))
    async with database.sessions() as session, session.begin():
        await database.outbox.add_many(session, [placed(order_id=f"o{i}") for i in range(2500)])
    await _set_sent_at(database, sorted(await _sent_at(database)), time.time() - 7200)
    relay = OutboxRelay(database.outbox, database.sessions, EventBus(MemoryTransport()), keep_sent=3600)
    assert await relay.purge() == 2500
    assert await _sent_at(database) == {}


async def test_a_relay_woken_as_it_is_stopped_still_stops(database: Database) -> None:
    """A commit wakes the relay (Outbox.wake); one that lands in the loop iteration in which
    stop() cancels the idle relay was swallowed by Python 3.11's asyncio.wait_for, the relay
    went on, and stop() waited for it forever (see tests/bus/test_consumer_stop.py)."""
    bus = EventBus(MemoryTransport())
    async with bus:
        for _ in range(10):
            relay = OutboxRelay(database.outbox, database.sessions, bus)
            relay.start()
            await asyncio.sleep(0.1)  # its first pass found nothing: it waits to be woken
            relay.wake()
            async with asyncio.timeout(5):
                await relay.stop()
