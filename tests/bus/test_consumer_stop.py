"""A NATS consumer stops when asked, whatever wakes it at that moment.

Python 3.11's ``asyncio.wait_for`` returns the awaited result instead of raising when its task
is cancelled in the loop iteration in which that result arrives (fixed in 3.12). The consumer's
run loop waited for its next message that way, so a message, a pull's status or a reconnect
waking it as ``stop()`` cancelled it swallowed the cancellation: the loop went on and ``stop()``
waited for it forever. (Every scaffolded service stops its consumer at the end of each of its
tests; one such run hung 240 s in a fresh-clone CI run, tests/scaffold/test_new.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from edgeway.bus.nats.transport import NatsTransport
from edgeway.bus.transport import ChannelConfig, Delivery

pytestmark = pytest.mark.xdist_group("embedded-nats")


async def test_a_consumer_woken_as_it_is_stopped_still_stops(nats_transport: NatsTransport) -> None:
    channel = ChannelConfig("orders")
    await nats_transport.declare(channel)

    async def handle(batch: Sequence[Delivery]) -> None:
        pass

    subscription = await nats_transport.subscribe(channel, "billing", handle)
    await asyncio.sleep(0.2)  # idle: its run loop waits for a message
    for _ in range(20):  # each time woken in the iteration in which stop() cancels its loop
        subscription.reconnected()
        async with asyncio.timeout(5):
            await subscription.stop()
        subscription = await nats_transport.subscribe(channel, "billing", handle)
        await asyncio.sleep(0.05)
    await subscription.stop()
