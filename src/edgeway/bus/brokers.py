"""The transport for a broker URL: ``nats://`` / ``tls://`` → NATS JetStream, ``amqp(s)://`` → RabbitMQ.

Services, the CLI and the security service take one setting (``EDGEWAY_BUS_URL`` or their own)
and get the right transport; the broker libraries are imported only when their scheme is used.
"""

from __future__ import annotations

import re

from edgeway.bus.errors import BusConfigError
from edgeway.bus.transport import Transport


def transport_for(url: str | None, prefix: str = "ew") -> Transport:
    """A new, unconnected transport for ``url``; ``prefix`` names the streams/exchanges."""
    if not url:
        raise BusConfigError("no broker URL: pass --url or set EDGEWAY_BUS_URL (nats://… or amqp://…)")
    if url.startswith(("nats://", "tls://")):
        from edgeway.bus.nats import NatsTransport

        return NatsTransport(url, prefix=prefix)
    if url.startswith(("amqp://", "amqps://")):
        from edgeway.bus.rabbit import RabbitTransport

        return RabbitTransport(url, prefix=prefix)
    raise BusConfigError(f"unsupported broker URL {url!r}: use nats://… or amqp://…")


def safe_url(url: str) -> str:
    """``url`` without its password, for logs and error messages."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)
