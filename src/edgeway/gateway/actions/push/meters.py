"""What the push channels count per transport (``websocket``, ``sse``): connections open,
messages sent, messages a client never got, slow clients cut off, and why connections ended.

The children are bound once per session (:meth:`PushMeters.of`), so counting a message costs no
label lookup; messages written are added once per wake-up of the writer, not once each (see
:meth:`TransportMeter.sent`). The families live in the gateway's
:class:`~edgeway.observability.metrics.Metrics`, which outlives a live reload: sessions opened
before a reload keep counting into the same series after it.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge

from edgeway.observability.metrics import Metrics

__all__ = ["TRANSPORTS", "PushMeters", "TransportMeter"]

TRANSPORTS: Final = ("websocket", "sse")


class TransportMeter:
    """The bound series of one transport."""

    __slots__ = ("connections", "discarded", "endings", "overflows", "send_timeouts", "sent", "transport")

    def __init__(self, transport: str, meters: PushMeters) -> None:
        self.transport = transport
        self.connections: Gauge = meters.connections.labels(transport)
        self.sent: Counter = meters.sent.labels(transport)
        self.discarded: Counter = meters.discarded.labels(transport)
        self.overflows: Counter = meters.overflows.labels(transport)
        self.send_timeouts: Counter = meters.send_timeouts.labels(transport)
        self.endings = meters.endings

    def ended(self, why: str) -> None:
        self.endings.labels(self.transport, why).inc()


class PushMeters:
    """The push families of one gateway, by transport."""

    def __init__(self, metrics: Metrics) -> None:
        self.connections = metrics.gauge(
            "edgeway_gateway_push_connections",
            "Open push connections, by transport (websocket, sse).",
            ("transport",),
        )
        self.sent = metrics.counter(
            "edgeway_gateway_push_sent_total",
            "Messages written to push clients (replays included), by transport.",
            ("transport",),
        )
        self.discarded = metrics.counter(
            "edgeway_gateway_push_discarded_total",
            "Messages for a client it never got: the one that overflowed its queue and those "
            "still queued when its connection ended (overflow, error, token expiry), by transport.",
            ("transport",),
        )
        self.overflows = metrics.counter(
            "edgeway_gateway_push_overflows_total",
            "Clients disconnected because their queue overflowed (slow consumers), by transport.",
            ("transport",),
        )
        self.send_timeouts = metrics.counter(
            "edgeway_gateway_push_send_timeouts_total",
            "Clients cut off because they did not take their last frame within close_timeout "
            "(they had stopped reading), by transport.",
            ("transport",),
        )
        self.endings = metrics.counter(
            "edgeway_gateway_push_closed_total",
            "Push connections ended, by transport and reason (client, overflow, idle, "
            "ping_timeout, shutdown, protocol, too_big, unsupported, expired).",
            ("transport", "reason"),
        )
        self._bound = {transport: TransportMeter(transport, self) for transport in TRANSPORTS}

    def of(self, transport: str) -> TransportMeter:
        found = self._bound.get(transport)
        if found is None:
            raise ValueError(f"unknown push transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
        return found
