"""A handler slower than its channel's ``ack_wait`` is not redelivered while it works.

The member tells JetStream every third of ``ack_wait`` that the deliveries it holds are in
progress; without that, JetStream hands a message whose ``ack_wait`` ran out to the group again
(here to the same member, the only one), and the slow handler would see it twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.events import Envelope
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import ChannelConfig, Delivery

pytestmark = pytest.mark.xdist_group("embedded-nats")

ACK_WAIT = 1.0
WORK = 3.5  # seconds the handler takes: three ack_waits and a half


@pytest.fixture
async def transport(tmp_path: Path) -> AsyncIterator[NatsTransport]:
    async with EmbeddedNats(port=0, data_dir=tmp_path / "nats") as server:
        running = NatsTransport(server.url, prefix="wpi")
        await running.connect()
        try:
            yield running
        finally:
            await running.close()


async def test_a_slow_handler_keeps_its_messages_and_sees_each_once(transport: NatsTransport) -> None:
    channel = ChannelConfig("jobs", ack_wait=ACK_WAIT)
    await transport.declare(channel)
    seen: list[tuple[str, int]] = []
    done = asyncio.Event()

    async def handler(batch: Sequence[Delivery]) -> None:
        first = not seen
        seen.extend((delivery.envelope.id, delivery.envelope.attempt) for delivery in batch)
        if first:
            await asyncio.sleep(WORK)  # the first batch works long; its acks come after
        for delivery in batch:
            await delivery.ack()
        if len(seen) >= 2:
            done.set()

    for n in (1, 2):
        await transport.publish(Envelope(f"job-{n}", "job", channel.name, time.time(), b"{}"))
    await transport.subscribe(channel, "workers", handler, batch_size=2)
    await asyncio.wait_for(done.wait(), 30)
    # A redelivery would arrive within an ack_wait of the first one running out: wait two.
    await asyncio.sleep(2 * ACK_WAIT)
    assert seen == [("job-1", 1), ("job-2", 1)], f"delivered again while in progress: {seen}"
