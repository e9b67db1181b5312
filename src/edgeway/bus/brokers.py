"""The transport for a broker URL: ``nats://`` / ``tls://`` → NATS JetStream, ``amqp(s)://`` → RabbitMQ.

Services, the CLI and the security service take one setting (``EDGEWAY_BUS_URL`` or their own)
and get the right transport; the broker libraries are imported only when their scheme is used,
and a missing one is reported as the extra to install (``edgeway[nats]``, ``edgeway[rabbitmq]``).
A NATS setting may list a cluster's servers, comma-separated (:mod:`edgeway.bus.urls`).
"""

from __future__ import annotations

from edgeway.bus.errors import BusConfigError
from edgeway.bus.transport import Transport
from edgeway.bus.urls import NATS_SCHEMES, broker_urls, safe_url
from edgeway.extras import require

__all__ = ["broker_extra", "safe_url", "transport_for"]


def broker_extra(url: str) -> str:
    """The extra whose client ``url``'s broker needs: ``nats`` or ``rabbitmq`` (any other scheme
    is refused by :func:`~edgeway.bus.urls.broker_urls` where the URL is validated)."""
    scheme = url.strip().split("://", 1)[0].lower()
    return "nats" if scheme in NATS_SCHEMES else "rabbitmq"


def transport_for(url: str | None, prefix: str = "ew") -> Transport:
    """A new, unconnected transport for ``url``; ``prefix`` names the streams/exchanges."""
    if not url:
        raise BusConfigError("no broker URL: pass --url or set EDGEWAY_BUS_URL (nats://… or amqp://…)")
    urls = broker_urls(url)
    extra = broker_extra(urls[0])
    require(extra, f"the broker at {safe_url(urls[0])}")
    if extra == "nats":
        from edgeway.bus.nats import NatsTransport

        return NatsTransport(urls, prefix=prefix)
    from edgeway.bus.rabbit import RabbitTransport

    return RabbitTransport(urls[0], prefix=prefix)
