"""Typed events and the envelope that carries them.

An event is a pydantic model that names its channel (the stream or exchange it travels on) and a
stable type string (what consumers dispatch on; keep it when you rename the class). The envelope
is the transport-neutral message: the event's JSON payload plus the metadata every hop needs.
On the wire the payload is the body, untouched, and the metadata travels in headers, so a
consumer written without edgeway can still read the event.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgeway.bus.errors import BusConfigError, EventDecodeError

# Channel names become NATS stream names and RabbitMQ exchange names: keep to the characters both
# accept without escaping.
CHANNEL_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
EVENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

# Header names. Lower case because AMQP keeps case and NATS headers are case-sensitive.
H_ID = "ew-id"
H_TYPE = "ew-type"
H_TIME = "ew-time"
H_KEY = "ew-key"
H_ATTEMPT = "ew-attempt"
H_REQUEST_ID = "x-request-id"
H_TRACEPARENT = "traceparent"
_RESERVED = frozenset({H_ID, H_TYPE, H_TIME, H_KEY, H_ATTEMPT})

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters (10 bits) per lookup: 13 lookups instead of 26 shifts, 1.5 µs instead of 2.9 µs
# per id (one id per published event).
_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))


def new_event_id() -> str:
    """A ULID: 48-bit millisecond time + 80 random bits, 26 Crockford base32 characters.

    Sorts by creation time, so dead-letter listings and logs read in order. The random part comes
    from ``os.urandom``, not the ``random`` module: the id is the de-duplication key, and a
    collision would make the broker drop a different event.
    """
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def check_name(kind: str, value: str, pattern: re.Pattern[str]) -> str:
    if pattern.fullmatch(value) is None:
        raise BusConfigError(f"invalid {kind} name {value!r}: it must match {pattern.pattern}")
    return value


class Event(BaseModel):
    """Base class of every event.

    Subclasses set ``channel`` and ``event_type`` and may set ``key_field``, the field whose
    value orders events (all events of one order id, say). These three names are reserved.

    >>> class OrderPlaced(Event):
    ...     channel = "orders"
    ...     event_type = "order.placed.v1"
    ...     key_field = "order_id"
    ...     order_id: str
    ...     total_cents: int
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    channel: ClassVar[str]
    event_type: ClassVar[str]
    key_field: ClassVar[str | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        channel = cls.__dict__.get("channel")
        event_type = cls.__dict__.get("event_type")
        if channel is None and event_type is None:
            return  # an abstract intermediate base class
        if not isinstance(channel, str) or not isinstance(event_type, str):
            raise BusConfigError(f"event class {cls.__name__} must set both `channel` and `event_type`")
        check_name("channel", channel, CHANNEL_NAME)
        check_name("event type", event_type, EVENT_TYPE)
        if cls.key_field is not None and cls.key_field not in cls.model_fields:
            raise BusConfigError(f"event class {cls.__name__}: key_field {cls.key_field!r} is not a field")

    def event_key(self) -> str | None:
        if self.key_field is None:
            return None
        return str(getattr(self, self.key_field))


E = TypeVar("E", bound=Event)


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message as the bus sees it, whatever the broker.

    ``id`` is the de-duplication id: the broker drops a second publish with the same id inside
    its window, and inboxes record it. ``attempt`` is 1 on the first delivery.
    """

    id: str
    type: str
    channel: str
    time: float
    payload: bytes
    key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    attempt: int = 1

    @property
    def request_id(self) -> str | None:
        return self.headers.get(H_REQUEST_ID)

    @property
    def traceparent(self) -> str | None:
        return self.headers.get(H_TRACEPARENT)

    def expired(self, ttl: float | None, now: float | None = None) -> bool:
        if ttl is None:
            return False
        return (time.time() if now is None else now) > self.time + ttl

    def with_attempt(self, attempt: int) -> Envelope:
        return replace(self, attempt=attempt)

    def to_headers(self) -> dict[str, str]:
        """The wire headers: metadata plus the user's headers (ours win on a clash)."""
        out = {k: v for k, v in self.headers.items() if k not in _RESERVED}
        out[H_ID] = self.id
        out[H_TYPE] = self.type
        out[H_TIME] = repr(self.time)
        if self.key is not None:
            out[H_KEY] = self.key
        return out

    @classmethod
    def from_headers(
        cls, channel: str, headers: Mapping[str, Any], payload: bytes, attempt: int = 1
    ) -> Envelope:
        """Rebuild an envelope from wire headers; tolerant of messages not published by edgeway."""
        plain = {str(k): v if isinstance(v, str) else _text(v) for k, v in headers.items()}
        return cls.from_wire(channel, plain, payload, attempt)

    @classmethod
    def from_wire(cls, channel: str, headers: dict[str, str], payload: bytes, attempt: int = 1) -> Envelope:
        """:meth:`from_headers` for string headers the caller hands over: ``headers`` is consumed
        (the metadata is popped out of it), which saves a copy per received message."""
        pop = headers.pop
        sent = pop(H_TIME, "")
        try:
            sent_at = float(sent)
        except ValueError:
            sent_at = time.time()
        message_id = pop(H_ID, "") or new_event_id()
        event_type = pop(H_TYPE, "")
        key = pop(H_KEY, None)
        pop(H_ATTEMPT, None)
        return cls(message_id, event_type, channel, sent_at, payload, key, headers, attempt)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def envelope_for(
    event: Event, headers: Mapping[str, str] | None = None, *, event_id: str | None = None
) -> Envelope:
    """Wrap an event for publishing."""
    return Envelope(
        id=event_id or new_event_id(),
        type=event.event_type,
        channel=event.channel,
        time=time.time(),
        payload=event.model_dump_json().encode(),
        key=event.event_key(),
        headers=dict(headers or {}),
    )


def decode(event_class: type[E], envelope: Envelope) -> E:
    try:
        return event_class.model_validate_json(envelope.payload)
    except ValidationError as exc:
        raise EventDecodeError(envelope.type, envelope.id, str(exc)) from exc
