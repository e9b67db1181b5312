"""RabbitMQ transport (aio-pika)."""

from edgeway.bus.rabbit.transport import RabbitTransport

__all__ = ["RabbitTransport"]
