"""A JetStream delivery: ack, nak with delay, term map to the JetStream ack protocol."""

from __future__ import annotations

from typing import Any

from edgeway.bus.events import Envelope

H_MSG_ID = "Nats-Msg-Id"
EVENTS_TOKEN = ".e."  # <prefix>.<channel>.e.<key token>: the subjects events are published on


def envelope_from(
    channel: str, headers: dict[str, str] | None, data: bytes, attempt: int = 1, subject: str = ""
) -> Envelope:
    """The envelope of a message read from a channel's subjects (``headers`` is consumed).

    Anything reading the NATS wire directly (the gateway's push source follows the subjects with
    a plain subscription) must decode with this, not ``Envelope.from_headers``: events are
    published without ``ew-id`` (``Nats-Msg-Id`` carries the same id) and, when the key is a
    valid subject token, without ``ew-key`` (the subject's last token is the key): every header
    saved is ~2 µs of building and parsing per message, nats-py doing both in Python.
    """
    headers = headers if headers is not None else {}
    key = None
    if EVENTS_TOKEN in subject:
        token = subject.rpartition(".")[2]
        if token != "_":
            key = token
    return Envelope.from_wire(
        channel, headers, data, attempt, message_id=headers.pop(H_MSG_ID, None), key=key
    )


class NatsDelivery:
    # One per message on the consume path; slots keep the per-message allocation small.
    __slots__ = ("_envelope", "_settled", "msg", "stream_seq")

    def __init__(self, msg: Any, envelope: Envelope, stream_seq: int) -> None:
        self.msg = msg
        self._envelope = envelope
        self.stream_seq = stream_seq
        self._settled = False

    @property
    def envelope(self) -> Envelope:
        return self._envelope

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        if not self._settled:
            self._settled = True
            await self.msg.ack()

    async def nak(self, delay: float) -> None:
        if not self._settled:
            self._settled = True
            await self.msg.nak(delay=delay if delay > 0 else None)

    async def term(self) -> None:
        if not self._settled:
            self._settled = True
            await self.msg.term()

    def __repr__(self) -> str:
        return (
            f"<NatsDelivery seq={self.stream_seq} attempt={self._envelope.attempt} settled={self._settled}>"
        )
