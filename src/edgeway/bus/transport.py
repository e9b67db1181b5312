"""The contract every broker transport implements, and the per-channel configuration.

The bus core (retries, TTL checks, dead-lettering decisions, inbox) is written once against
:class:`Transport`; ``memory``, ``nats`` and ``rabbit`` each implement it in a package with the
same file layout. A transport moves envelopes and keeps the broker's promises (durability,
de-duplication window, competing consumers, delayed redelivery); it makes no policy decisions.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edgeway.bus.errors import BusConfigError
from edgeway.bus.events import CHANNEL_NAME, GROUP_NAME, Envelope, check_name


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential retry delays: ``initial * factor ** (attempt - 1)``, capped at ``maximum``."""

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.factor < 1 or self.maximum < self.initial:
            raise BusConfigError(
                f"invalid backoff {self}: need initial >= 0, factor >= 1, maximum >= initial"
            )

    def delay(self, attempt: int) -> float:
        """The delay before delivery ``attempt + 1`` after delivery ``attempt`` failed."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, attempt - 1)))


class Expiry(enum.Enum):
    """What happens to a message older than its channel's TTL."""

    DROP = "drop"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Per-channel settings, shared by every broker.

    ``ttl``: seconds after publishing when a message is no longer worth delivering. ``None``
    keeps messages until consumed (and, on NATS, for rebuilds). ``max_deliver``: deliveries
    before a message is dead-lettered. ``ack_wait``: seconds a delivery may stay unacknowledged
    before the broker assumes the consumer died and redelivers. ``duplicate_window``: seconds
    the broker remembers message ids to drop re-publishes. ``replicas``: copies kept by a
    clustered broker (NATS stream replicas; RabbitMQ quorum queues replicate on their own).
    ``retention``: seconds the broker keeps messages for history (read-copy rebuilds);
    ``None`` means forever unless ``ttl`` is set.
    """

    name: str
    ttl: float | None = None
    on_expiry: Expiry = Expiry.DROP
    max_deliver: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    ack_wait: float = 30.0
    duplicate_window: float = 120.0
    replicas: int = 1
    retention: float | None = None

    def __post_init__(self) -> None:
        check_name("channel", self.name, CHANNEL_NAME)
        if self.ttl is not None and self.ttl <= 0:
            raise BusConfigError(f"channel {self.name!r}: ttl must be > 0 seconds, got {self.ttl}")
        if self.max_deliver < 1:
            raise BusConfigError(f"channel {self.name!r}: max_deliver must be >= 1")
        if self.ack_wait <= 0 or self.duplicate_window <= 0:
            raise BusConfigError(f"channel {self.name!r}: ack_wait and duplicate_window must be > 0")
        if self.replicas not in (1, 3, 5):
            raise BusConfigError(f"channel {self.name!r}: replicas must be 1, 3 or 5")

    @property
    def broker_max_age(self) -> float | None:
        """How long the broker itself keeps a message.

        With ``on_expiry=DROP`` the broker deletes expired messages (NATS ``max_age``, RabbitMQ
        ``x-message-ttl``). With ``DEAD_LETTER`` it must keep them past the TTL so the bus can
        still see and dead-letter them; ``retention`` (default 24 h) bounds that.
        """
        if self.ttl is None:
            return self.retention
        if self.on_expiry is Expiry.DROP:
            return self.ttl
        return max(self.ttl, self.retention if self.retention is not None else 86_400.0)


def check_group(group: str) -> str:
    return check_name("group", group, GROUP_NAME)


class Delivery(Protocol):
    """One delivery of a message to one consumer group member."""

    @property
    def envelope(self) -> Envelope: ...

    async def ack(self) -> None:
        """Done: never deliver this message to this group again."""

    async def nak(self, delay: float) -> None:
        """Failed: deliver it again (as attempt + 1) after ``delay`` seconds."""

    async def term(self) -> None:
        """Give up on it without redelivery (the bus has dead-lettered or dropped it)."""


BatchHandler = Callable[[Sequence[Delivery]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message a group gave up on, with why."""

    id: str
    group: str
    reason: str
    dead_at: float
    envelope: Envelope


class Subscription(Protocol):
    async def stop(self) -> None:
        """Stop fetching; unacknowledged deliveries go back to the group."""


class Transport(Protocol):
    """What a broker must do for the bus. See the module docstring."""

    name: str

    @property
    def connected(self) -> bool:
        """True while connected to the broker; False before ``connect``, after ``close`` and while
        the client reconnects on its own after losing the broker."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def declare(self, channel: ChannelConfig) -> None:
        """Create (or check) the channel's stream/exchange and its dead-letter store."""

    async def declare_group(self, channel: ChannelConfig, group: str) -> None:
        """Create the durable consumer group, so it keeps messages while no member runs."""

    async def publish(self, envelope: Envelope) -> None:
        """Publish and wait for the broker's confirmation; ``envelope.id`` de-duplicates."""

    async def publish_batch(self, envelopes: Sequence[Envelope]) -> None:
        """Publish many with a window of outstanding confirmations; all confirmed on return."""

    async def subscribe(
        self,
        channel: ChannelConfig,
        group: str,
        handler: BatchHandler,
        *,
        batch_size: int = 100,
        broadcast: bool = False,
    ) -> Subscription:
        """Join ``group`` on ``channel``; ``handler`` gets batches and must settle every delivery.

        With ``broadcast`` the member does not compete: it gets a private, non-durable queue of its
        own that receives every message published from now on, and is deleted when it stops.
        """

    async def dead_letter(self, channel: ChannelConfig, group: str, delivery: Delivery, reason: str) -> None:
        """Store the message with ``reason`` in the channel's dead-letter store, then settle it."""

    async def dead_letters(self, channel: ChannelConfig) -> list[DeadLetter]:
        """Every dead letter of the channel, oldest first, without removing them."""

    async def remove_dead_letter(self, channel: ChannelConfig, dead_letter_id: str) -> DeadLetter:
        """Remove one dead letter and return it; :class:`DeadLetterNotFoundError` if absent."""

    async def redeliver(self, channel: ChannelConfig, group: str, envelope: Envelope) -> None:
        """Deliver ``envelope`` again to ``group`` only (other groups already handled it)."""

    def history(self, channel: ChannelConfig) -> AsyncIterator[Envelope]:
        """Every message the broker still holds on the channel, from the beginning."""
