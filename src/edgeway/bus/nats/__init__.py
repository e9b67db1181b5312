"""NATS JetStream transport (nats-py)."""

from edgeway.bus.nats.delivery import envelope_from
from edgeway.bus.nats.transport import NatsTransport

__all__ = ["NatsTransport", "envelope_from"]
