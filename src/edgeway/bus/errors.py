"""Errors raised by the event bus.

Hierarchy::

    BusError                       anything the bus raises on purpose
    ├── BusConfigError             an event class, channel or group is declared wrongly
    ├── EventDecodeError           a received payload does not validate against its event type
    ├── TransportError             the broker failed us (unreachable, publish not confirmed)
    │   └── PublishError           a publish was not confirmed by the broker
    ├── DeadLetterNotFoundError         no dead letter with that id (already replayed or deleted)
    ├── UnsupportedOperationError       the transport cannot do this (e.g. no history to rebuild from)
    └── EmbeddedServerError        the embedded nats-server binary is missing or did not start

Third-party broker errors (nats-py, aio-pika) are mapped to :class:`TransportError` at the
transport boundary, so callers never need to import a broker library to handle failures.
"""

from __future__ import annotations


class BusError(Exception):
    """Base class of every error the bus raises."""


class BusConfigError(BusError):
    """An event class, channel or consumer group is declared wrongly."""


class EventDecodeError(BusError):
    """A received message could not be turned into its event type."""

    def __init__(self, event_type: str, message_id: str, detail: str) -> None:
        super().__init__(f"message {message_id} of type {event_type!r} does not validate: {detail}")
        self.event_type = event_type
        self.message_id = message_id


class TransportError(BusError):
    """The broker is unreachable or refused an operation."""


class PublishError(TransportError):
    """The broker did not confirm a publish; the caller may retry with the same message id."""

    def __init__(self, message_id: str, detail: str) -> None:
        super().__init__(f"publish of message {message_id} was not confirmed: {detail}")
        self.message_id = message_id


class DeadLetterNotFoundError(BusError):
    """No dead letter with the given id exists on the channel."""

    def __init__(self, channel: str, dead_letter_id: str) -> None:
        super().__init__(
            f"no dead letter {dead_letter_id!r} on channel {channel!r}; "
            "list them with `edgeway bus dlq list` (it may have been replayed already)"
        )
        self.channel = channel
        self.dead_letter_id = dead_letter_id


class UnsupportedOperationError(BusError):
    """The transport cannot perform this operation with the channel's configuration."""


class EmbeddedServerError(BusError):
    """The embedded nats-server could not be found, started or stopped."""
