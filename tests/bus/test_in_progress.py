"""A handler slower than its channel's ``ack_wait`` is not redelivered while it works.

The member tells JetStream every third of ``ack_wait`` that the deliveries it holds are in
progress; without that, JetStream hands a message whose ``ack_wait`` ran out to the group again
(here to the same member, the only one), and the slow handler would see it twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from edgeway.bus.events import Envelope
from edgeway.bus.nats import NatsTransport
from edgeway.bus.transport import ChannelConfig, Delivery

pytestmark = pytest.mark.xdist_group("embedded-nats")

ACK_WAIT = 1.0
WORK = 3.5  # seconds the handler takes: three ack_waits and a half


async def test_a_slow_handler_keeps_its_messages_and_sees_each_once(nats_transport: NatsTransport) -> None:
    channel = ChannelConfig("jobs", ack_wait=ACK_WAIT)
    await nats_transport.declare(channel)
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
        await nats_transport.publish(Envelope(f"job-{n}", "job", channel.name, time.time(), b"{}"))
    await nats_transport.subscribe(channel, "workers", handler, batch_size=2)
    await asyncio.wait_for(done.wait(), 30)
    # A redelivery would arrive within an ack_wait of the first one running out: wait two.
    await asyncio.sleep(2 * ACK_WAIT)
    assert seen == [("job-1", 1), ("job-2", 1)], f"delivered again while in progress: {seen}"
