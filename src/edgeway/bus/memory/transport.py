"""The in-memory transport.

:class:`MemoryBroker` plays the broker: one append-only log per channel (like a JetStream
stream), a cursor per consumer group, redelivery timers, an ack deadline, a de-duplication
window and a dead-letter list. Several :class:`MemoryTransport` objects sharing one broker behave
like several services connected to one server. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from edgeway.bus.errors import BusConfigError, DeadLetterNotFoundError
from edgeway.bus.events import Envelope
from edgeway.bus.memory.delivery import MemoryDelivery
from edgeway.bus.transport import BatchHandler, ChannelConfig, DeadLetter, Delivery, check_group
from edgeway.tasks import cancel_and_wait, woken


@dataclass(slots=True)
class _Message:
    seq: int
    envelope: Envelope
    only_group: str | None = None  # set for a redelivery aimed at one group (a DLQ replay)


@dataclass(slots=True)
class _Group:
    name: str
    stream: _Stream
    cursor: int = 0
    due: list[tuple[float, int]] = field(default_factory=list)  # heap of (when, seq)
    deliveries: dict[int, int] = field(default_factory=dict)  # seq -> deliveries so far
    inflight: dict[int, float] = field(default_factory=dict)  # seq -> ack deadline
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def schedule(self, seq: int, delay: float) -> None:
        heapq.heappush(self.due, (time.monotonic() + delay, seq))
        self.wake.set()

    def take(self, limit: int) -> list[MemoryDelivery]:
        now = time.monotonic()
        for seq, deadline in list(self.inflight.items()):
            if now >= deadline:  # the member died or stalled: the broker takes the message back
                del self.inflight[seq]
                heapq.heappush(self.due, (now, seq))
        picked: list[int] = []
        while self.due and self.due[0][0] <= now and len(picked) < limit:
            picked.append(heapq.heappop(self.due)[1])
        log = self.stream.messages
        while self.cursor < len(log) and len(picked) < limit:
            message = log[self.cursor]
            self.cursor += 1
            if message.only_group in (None, self.name):
                picked.append(message.seq)
        out = []
        for seq in picked:
            message = log[seq - 1]
            if self.stream.gone(message.envelope):
                continue
            count = self.deliveries.get(seq, 0) + 1
            self.deliveries[seq] = count
            self.inflight[seq] = now + self.stream.config.ack_wait
            out.append(MemoryDelivery(self, seq, message.envelope.with_attempt(count)))
        return out

    def next_wakeup(self) -> float:
        times = [self.due[0][0]] if self.due else []
        times.extend(self.inflight.values())
        return max(0.0, min(times) - time.monotonic()) if times else 1.0


@dataclass(slots=True)
class _Stream:
    config: ChannelConfig
    messages: list[_Message] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)
    dead: dict[str, DeadLetter] = field(default_factory=dict)
    dead_seq: int = 0

    def gone(self, envelope: Envelope) -> bool:
        """True when the broker would have deleted it already (its max age passed)."""
        max_age = self.config.broker_max_age
        return max_age is not None and time.time() > envelope.time + max_age

    def append(self, envelope: Envelope, only_group: str | None = None) -> None:
        self.messages.append(_Message(len(self.messages) + 1, envelope, only_group))
        for group in self.groups.values():
            group.wake.set()


class MemoryBroker:
    """The shared state several transports connect to."""

    def __init__(self) -> None:
        self.streams: dict[str, _Stream] = {}
        self.members = 0  # numbers broadcast members' private groups

    def stream(self, name: str) -> _Stream:
        try:
            return self.streams[name]
        except KeyError:
            raise BusConfigError(f"channel {name!r} is not declared on this broker") from None


class _MemorySubscription:
    def __init__(self, group: _Group, handler: BatchHandler, batch_size: int, *, private: bool) -> None:
        self._group = group
        self._handler = handler
        self._batch_size = batch_size
        self._private = private
        self._mine: set[int] = set()
        self._task = asyncio.create_task(self._run(), name=f"memory-consumer-{group.name}")

    async def _run(self) -> None:
        group = self._group
        while True:
            batch = group.take(self._batch_size)
            if not batch:
                group.wake.clear()
                await woken(group.wake, group.next_wakeup())
                continue
            self._mine = {d.seq for d in batch}
            await self._handler(batch)
            self._mine = set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        if self._private:
            self._group.stream.groups.pop(self._group.name, None)
            return
        # Like a closed AMQP channel: what this member held goes back to the group at once.
        for seq in self._mine:
            if self._group.inflight.pop(seq, None) is not None:
                self._group.schedule(seq, 0.0)


class MemoryTransport:
    """In-process :class:`~edgeway.bus.transport.Transport`."""

    name = "memory"

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker or MemoryBroker()
        self._subscriptions: list[_MemorySubscription] = []
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        self._connected = True

    async def close(self) -> None:
        for sub in self._subscriptions:
            await sub.stop()
        self._subscriptions.clear()
        self._connected = False

    async def declare(self, channel: ChannelConfig) -> None:
        existing = self.broker.streams.get(channel.name)
        if existing is None:
            self.broker.streams[channel.name] = _Stream(channel)
        else:
            existing.config = channel

    async def declare_group(self, channel: ChannelConfig, group: str) -> None:
        check_group(group)
        stream = self.broker.stream(channel.name)
        if group not in stream.groups:
            # A new durable group starts at the beginning, like a JetStream deliver-all consumer.
            stream.groups[group] = _Group(group, stream)

    async def publish(self, envelope: Envelope) -> None:
        stream = self.broker.stream(envelope.channel)
        now = time.time()
        seen = stream.seen.get(envelope.id)
        if seen is not None and now - seen < stream.config.duplicate_window:
            return
        stream.seen[envelope.id] = now
        stream.append(envelope)

    async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
        for envelope in envelopes:
            await self.publish(envelope)

    async def subscribe(
        self,
        channel: ChannelConfig,
        group: str,
        handler: BatchHandler,
        *,
        batch_size: int = 100,
        broadcast: bool = False,
    ) -> _MemorySubscription:
        stream = self.broker.stream(channel.name)
        if broadcast:
            # A private group starting at the end of the log, gone when the member stops.
            self.broker.members += 1
            member = _Group(f"{group}.{self.broker.members}", stream, cursor=len(stream.messages))
            stream.groups[member.name] = member
        else:
            await self.declare_group(channel, group)
            member = stream.groups[group]
        sub = _MemorySubscription(member, handler, batch_size, private=broadcast)
        self._subscriptions.append(sub)
        return sub

    async def dead_letter(self, channel: ChannelConfig, group: str, delivery: Delivery, reason: str) -> None:
        stream = self.broker.stream(channel.name)
        stream.dead_seq += 1
        key = str(stream.dead_seq)
        stream.dead[key] = DeadLetter(key, group, reason, time.time(), delivery.envelope)
        await delivery.term()

    async def dead_letters(self, channel: ChannelConfig) -> list[DeadLetter]:
        return list(self.broker.stream(channel.name).dead.values())

    async def remove_dead_letter(self, channel: ChannelConfig, dead_letter_id: str) -> DeadLetter:
        try:
            return self.broker.stream(channel.name).dead.pop(dead_letter_id)
        except KeyError:
            raise DeadLetterNotFoundError(channel.name, dead_letter_id) from None

    async def redeliver(self, channel: ChannelConfig, group: str, envelope: Envelope) -> None:
        await self.declare_group(channel, group)
        self.broker.stream(channel.name).append(envelope.with_attempt(1), only_group=group)

    async def history(self, channel: ChannelConfig) -> AsyncIterator[Envelope]:
        stream = self.broker.stream(channel.name)
        for message in list(stream.messages):
            if message.only_group is None and not stream.gone(message.envelope):
                yield message.envelope
