"""The transport for a broker URL: ``nats://`` / ``tls://`` → NATS JetStream, ``amqp(s)://`` → RabbitMQ.

Services, the CLI and the security service take one setting (``EDGEWAY_BUS_URL`` or their own)
and get the right transport; the broker libraries are imported only when their scheme is used.
A NATS setting may list a cluster's servers, comma-separated (:mod:`edgeway.bus.urls`).
"""

from __future__ import annotations

from edgeway.bus.errors import BusConfigError
from edgeway.bus.transport import Transport
from edgeway.bus.urls import NATS_SCHEMES, broker_urls, safe_url

__all__ = ["safe_url", "transport_for"]


def transport_for(url: str | None, prefix: str = "ew") -> Transport:
    """A new, unconnected transport for ``url``; ``prefix`` names the streams/exchanges."""
    if not url:
        raise BusConfigError("no broker URL: pass --url or set EDGEWAY_BUS_URL (nats://… or amqp://…)")
    urls = broker_urls(url)
    if urls[0].lower().startswith(tuple(f"{scheme}://" for scheme in NATS_SCHEMES)):
        from edgeway.bus.nats import NatsTransport

        return NatsTransport(urls, prefix=prefix)
    from edgeway.bus.rabbit import RabbitTransport

    return RabbitTransport(urls[0], prefix=prefix)
