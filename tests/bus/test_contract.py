"""The delivery contract, run against every broker (memory, real NATS, real RabbitMQ)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.dlq import DeadLetters
from edgeway.bus.errors import BusConfigError
from edgeway.bus.events import Event
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.transport import Backoff, ChannelConfig, Expiry
from edgeway.observability.ids import parse_traceparent

from .conftest import BrokerUnderTest
from .helpers import eventually, order_events

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.5)


async def test_every_published_event_is_delivered_and_not_again_after_a_restart(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, backoff=FAST)
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.order_id)  # type: ignore[attr-defined]

    bus = EventBus(broker.make(), channels=[config])
    bus.add_handler(placed, handle, group="billing")
    async with bus:
        for i in range(50):
            await bus.publish(placed(order_id=f"o{i}"))
        await eventually(lambda: len(seen) >= 50, what="50 deliveries")
    assert sorted(seen) == sorted(f"o{i}" for i in range(50))

    again = EventBus(broker.make(), channels=[config])
    again.add_handler(placed, handle, group="billing")
    async with again:
        await asyncio.sleep(0.5)
    assert len(seen) == 50


async def test_each_group_gets_every_event(broker: BrokerUnderTest, unique: Callable[[str], str]) -> None:
    placed, _ = order_events(unique("orders"))
    got: dict[str, list[str]] = {"billing": [], "shipping": []}
    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel)])
    for group in got:

        async def handle(event: Event, group: str = group) -> None:
            got[group].append(event.order_id)  # type: ignore[attr-defined]

        bus.add_handler(placed, handle, group=group)
    async with bus:
        for i in range(20):
            await bus.publish(placed(order_id=f"o{i}"))
        await eventually(lambda: all(len(v) >= 20 for v in got.values()), what="fan-out")
    assert sorted(got["billing"]) == sorted(got["shipping"]) == sorted(f"o{i}" for i in range(20))


async def test_members_of_one_group_share_the_work_without_duplicates(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel)
    by_member: dict[int, list[str]] = {0: [], 1: []}
    buses = []
    for member in (0, 1):
        bus = EventBus(broker.make(), channels=[config], batch_size=5)

        async def handle(event: Event, member: int = member) -> None:
            by_member[member].append(event.order_id)  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)  # hold the batch so the other member gets a turn

        bus.add_handler(placed, handle, group="workers")
        buses.append(bus)
    for bus in buses:
        await bus.start()
    try:
        for i in range(100):
            await buses[0].publish(placed(order_id=f"o{i}"))
        await eventually(lambda: len(by_member[0]) + len(by_member[1]) >= 100, what="100 deliveries")
        await asyncio.sleep(0.2)
    finally:
        for bus in buses:
            await bus.stop()
    everything = by_member[0] + by_member[1]
    assert Counter(everything) == Counter(f"o{i}" for i in range(100))
    assert by_member[0]
    assert by_member[1]


async def test_a_failing_handler_is_retried_with_backoff_then_dead_lettered_with_the_reason(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, max_deliver=3, backoff=Backoff(0.2, 2.0, 5.0))
    attempts: list[tuple[int, float]] = []

    async def handle(event: Event, ctx: Received) -> None:
        attempts.append((ctx.attempt, time.monotonic()))
        raise ValueError(f"card declined for {event.order_id}")  # type: ignore[attr-defined]

    bus = EventBus(broker.make(), channels=[config])
    bus.add_handler(placed, handle, group="billing")
    dlq = DeadLetters(bus.transport, config)
    async with bus:
        envelope = await bus.publish(placed(order_id="o-bad"))
        await eventually(lambda: len(attempts) >= 3, what="three attempts")
        letters = await _wait_for_dead_letters(dlq, 1)
        await asyncio.sleep(0.5)
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert attempts[1][1] - attempts[0][1] >= 0.15  # backoff 0.2 s
    assert attempts[2][1] - attempts[1][1] >= 0.35  # backoff 0.4 s
    (letter,) = letters
    assert letter.group == "billing"
    assert letter.envelope.id == envelope.id
    assert "ValueError: card declined for o-bad" in letter.reason
    assert "after 3 attempts" in letter.reason


async def test_a_replayed_dead_letter_reaches_only_its_group_and_leaves_the_queue(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, max_deliver=1, backoff=FAST)
    broken = True
    billed: list[str] = []
    shipped: list[str] = []

    async def bill(event: Event) -> None:
        if broken:
            raise ConnectionError("payment provider down")
        billed.append(event.order_id)  # type: ignore[attr-defined]

    async def ship(event: Event) -> None:
        shipped.append(event.order_id)  # type: ignore[attr-defined]

    bus = EventBus(broker.make(), channels=[config])
    bus.add_handler(placed, bill, group="billing")
    bus.add_handler(placed, ship, group="shipping")
    dlq = DeadLetters(bus.transport, config)
    async with bus:
        await bus.publish(placed(order_id="o-1"))
        (letter,) = await _wait_for_dead_letters(dlq, 1)
        assert "ConnectionError: payment provider down" in letter.reason
        assert (await dlq.get(letter.id)).envelope.payload == letter.envelope.payload
        broken = False
        await dlq.replay(letter.id)
        await eventually(lambda: billed == ["o-1"], what="replayed delivery")
        await asyncio.sleep(0.3)
        assert await dlq.list() == []
    assert shipped == ["o-1"]


async def test_an_expired_message_is_never_delivered_to_a_consumer_that_was_down(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, ttl=1.0)
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.order_id)  # type: ignore[attr-defined]

    first = EventBus(broker.make(), channels=[config])
    first.add_handler(placed, handle, group="billing")
    async with first:  # creates the durable group, then the consumer goes down
        pass
    publisher = EventBus(broker.make(), channels=[config])
    async with publisher:
        await publisher.publish(placed(order_id="stale"))
        await asyncio.sleep(1.5)
        await publisher.publish(placed(order_id="fresh"))
    second = EventBus(broker.make(), channels=[config])
    second.add_handler(placed, handle, group="billing")
    async with second:
        await eventually(lambda: "fresh" in seen, what="the fresh message")
        await asyncio.sleep(0.3)
    assert seen == ["fresh"]


async def test_an_expired_message_is_dead_lettered_when_the_channel_says_so(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, ttl=1.0, on_expiry=Expiry.DEAD_LETTER)
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.order_id)  # type: ignore[attr-defined]

    first = EventBus(broker.make(), channels=[config])
    first.add_handler(placed, handle, group="billing")
    async with first:
        await first.publish(placed(order_id="warmup"))
        await eventually(lambda: seen == ["warmup"], what="warm-up delivery")
    publisher = EventBus(broker.make(), channels=[config])
    async with publisher:
        await publisher.publish(placed(order_id="stale"))
        await asyncio.sleep(1.5)
    second = EventBus(broker.make(), channels=[config])
    second.add_handler(placed, handle, group="billing")
    dlq = DeadLetters(second.transport, config)
    async with second:
        (letter,) = await _wait_for_dead_letters(dlq, 1)
    assert seen == ["warmup"]
    assert "expired" in letter.reason


async def test_request_id_and_trace_context_follow_the_event_to_events_it_causes(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, cancelled = order_events(unique("orders"))
    received: list[Received] = []
    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel)])

    async def on_placed(event: Event, ctx: Received) -> None:
        received.append(ctx)
        await bus.publish(cancelled(order_id=event.order_id))  # type: ignore[attr-defined]

    async def on_cancelled(event: Event, ctx: Received) -> None:
        received.append(ctx)

    bus.add_handler(placed, on_placed, group="a")
    bus.add_handler(cancelled, on_cancelled, group="a")
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with bus:
        await bus.publish(placed(order_id="o-1"), headers={"x-request-id": "req-42", "traceparent": parent})
        await eventually(lambda: len(received) == 2, what="both events")
    first, second = received
    assert first.request_id == second.request_id == "req-42"
    child = parse_traceparent((second.traceparent or "").encode())
    assert child is not None
    assert child.trace_id == b"0af7651916cd43dd8448eb211c80319c"
    assert child.parent_id != b"b7ad6b7169203331"


async def test_a_republished_message_id_is_delivered_once(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    seen: list[str] = []

    async def handle(event: Event, ctx: Received) -> None:
        seen.append(ctx.id)

    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel)])
    bus.add_handler(placed, handle, group="g")
    async with bus:
        await bus.publish(placed(order_id="o-1"), event_id="01DEDUPTEST0000000000000001")
        await bus.publish(placed(order_id="o-1"), event_id="01DEDUPTEST0000000000000001")
        await bus.publish(placed(order_id="o-2"))
        await eventually(lambda: len(seen) >= 2, what="two deliveries")
        await asyncio.sleep(0.5)
    if broker.kind == "rabbitmq":
        # RabbitMQ has no broker-side de-duplication: the inbox removes the double (see test_inbox).
        pytest.skip("RabbitMQ de-duplicates on the consumer side only")
    assert seen.count("01DEDUPTEST0000000000000001") == 1


async def test_a_payload_that_does_not_validate_is_dead_lettered_without_retries(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, max_deliver=5, backoff=FAST)
    calls: list[str] = []

    async def handle(event: Event) -> None:
        calls.append("called")

    bus = EventBus(broker.make(), channels=[config])
    bus.add_handler(placed, handle, group="g")
    dlq = DeadLetters(bus.transport, config)
    async with bus:
        bad = await bus.publish(placed(order_id="x"))
        await bus.publish_envelope(replace(bad, id="01BADPAYLOAD00000000000000", payload=b'{"n": "x"}'))
        (letter,) = await _wait_for_dead_letters(dlq, 1)
    assert calls == ["called"]
    assert "does not validate" in letter.reason


async def _wait_for_dead_letters(dlq: DeadLetters, count: int, timeout: float = 10.0) -> list:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        letters = await dlq.list()
        if len(letters) >= count:
            return letters
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} dead letters, found {len(letters)}")
        await asyncio.sleep(0.05)


async def test_every_broadcast_member_gets_every_event_published_while_it_runs(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, _ = order_events(unique("orders"))
    config = ChannelConfig(placed.channel, backoff=FAST)
    got: dict[int, list[str]] = {0: [], 1: []}

    def member(number: int) -> EventBus:
        bus = EventBus(broker.make(), channels=[config])

        async def handle(event: Event, ctx: Received) -> None:
            if event.order_id == "flaky" and ctx.attempt == 1:  # type: ignore[attr-defined]
                raise ConnectionError("retried on this member's own queue")
            got[number].append(event.order_id)  # type: ignore[attr-defined]

        bus.add_handler(placed, handle, group="gateways", broadcast=True)
        return bus

    publisher = EventBus(broker.make(), channels=[config])
    async with publisher:
        await publisher.publish(placed(order_id="before"))  # no member runs: kept for nobody
        first, second = member(0), member(1)
        async with first, second:
            for i in range(20):
                await publisher.publish(placed(order_id=f"o{i}"))
            await publisher.publish(placed(order_id="flaky"))
            await eventually(lambda: len(got[0]) == len(got[1]) == 21, what="every event at both members")
        await publisher.publish(placed(order_id="while-down"))
        again = member(0)
        async with again:
            await publisher.publish(placed(order_id="after"))
            await eventually(lambda: "after" in got[0], what="the event published after the restart")
            await asyncio.sleep(0.3)
    expected = [f"o{i}" for i in range(20)] + ["flaky"]
    assert got[0] == [*expected, "after"]
    assert got[1] == expected


def test_a_group_is_broadcast_or_not_for_all_its_handlers(unique: Callable[[str], str]) -> None:
    placed, cancelled = order_events(unique("orders"))
    bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)])

    async def handle(event: Event) -> None:
        return None

    bus.add_handler(placed, handle, group="gateways", broadcast=True)
    with pytest.raises(BusConfigError, match="either all its handlers are broadcast or none"):
        bus.add_handler(cancelled, handle, group="gateways")


async def test_event_keys_arrive_as_published_whatever_their_characters(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, cancelled = order_events(unique("orders"))
    keys: dict[str, str | None] = {}

    async def handle(event: Event, ctx: Received) -> None:
        keys[event.order_id] = ctx.envelope.key  # type: ignore[attr-defined]

    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel)])
    bus.add_handler(placed, handle, group="keys")
    bus.add_handler(cancelled, handle, group="keys")
    odd = "a b.c/ü*>"  # not a subject token: hashed on the subject, carried in a header
    async with bus:
        for order_id in ("o-1", odd, "_", "h" + "0" * 20):
            await bus.publish(placed(order_id=order_id))
        await bus.publish(cancelled(order_id="no-key"))
        await eventually(lambda: len(keys) == 5, what="five events")
    assert keys == {"o-1": "o-1", odd: odd, "_": "_", "h" + "0" * 20: "h" + "0" * 20, "no-key": None}


async def test_connected_is_true_between_connect_and_close(broker: BrokerUnderTest) -> None:
    transport = broker.make()
    assert not transport.connected
    await transport.connect()
    assert transport.connected
    await transport.close()
    assert not transport.connected
