"""In-process transport: the same contract as NATS and RabbitMQ, for fast tests and demos."""

from edgeway.bus.memory.transport import MemoryBroker, MemoryTransport

__all__ = ["MemoryBroker", "MemoryTransport"]
