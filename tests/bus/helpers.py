"""Event classes and waiting helpers shared by the bus tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from edgeway.bus.events import Event


def order_events(channel: str) -> tuple[type[Event], type[Event]]:
    """Two event types on one (test-unique) channel."""

    class OrderPlaced(Event):
        order_id: str
        n: int = 0

    class OrderCancelled(Event):
        order_id: str

    OrderPlaced.channel = channel
    OrderPlaced.event_type = "order.placed.v1"
    OrderPlaced.key_field = "order_id"
    OrderCancelled.channel = channel
    OrderCancelled.event_type = "order.cancelled.v1"
    return OrderPlaced, OrderCancelled


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` (a plain or async function) is true."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
