"""NATS JetStream transport (nats-py)."""

from edgeway.bus.nats.transport import NatsTransport

__all__ = ["NatsTransport"]
