"""A RabbitMQ delivery. ``nak(delay)`` re-publishes to a per-delay retry queue, then acks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from edgeway.bus.events import Envelope

Retry = Callable[["RabbitDelivery", float], Awaitable[None]]


class RabbitDelivery:
    # One per message on the consume path; slots keep the per-message allocation small.
    __slots__ = ("_envelope", "_retry", "_settled", "message")

    def __init__(self, message: Any, envelope: Envelope, retry: Retry) -> None:
        self.message = message
        self._envelope = envelope
        self._retry = retry
        self._settled = False

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            await self.message.ack()

    async def nak(self, delay: float) -> None:
        if not self._settled:
            self._settled = True
            # Publish the copy (confirmed) before acking the original: a crash in between
            # duplicates the message, never loses it.
            await self._retry(self, delay)
            await self.message.ack()

    async def term(self) -> None:
        if not self._settled:
            self._settled = True
            await self.message.ack()  # the bus has dead-lettered or dropped it on purpose

    async def requeue(self) -> None:
        if not self._settled:
            self._settled = True
            await self.message.nack(requeue=True)

    def __repr__(self) -> str:
        envelope = self._envelope
        return f"<RabbitDelivery id={envelope.id} attempt={envelope.attempt} settled={self._settled}>"
