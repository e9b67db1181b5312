"""A delivery from the in-memory broker: settling it updates the group's bookkeeping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeway.bus.events import Envelope

if TYPE_CHECKING:
    from edgeway.bus.memory.transport import _Group


class MemoryDelivery:
    __slots__ = ("_envelope", "_group", "_settled", "seq")

    def __init__(self, group: _Group, seq: int, envelope: Envelope) -> None:
        self._group = group
        self.seq = seq
        self._envelope = envelope
        self._settled = False

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._group.inflight.pop(self.seq, None)
        return True

    async def ack(self) -> None:
        self._settle()

    async def nak(self, delay: float) -> None:
        if self._settle():
            self._group.schedule(self.seq, delay)

    async def term(self) -> None:
        self._settle()

    def __repr__(self) -> str:
        return f"<MemoryDelivery seq={self.seq} attempt={self._envelope.attempt} settled={self._settled}>"
