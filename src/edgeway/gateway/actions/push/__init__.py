"""Push to clients over WebSocket and Server-Sent Events.

A route with a ``push`` action is a channel clients connect to and subscribe to topics on
(``jobs/{id}``, ``orders/{id}``), each topic authorised by the route's ``topics`` rules and the
caller's identity (set by the route's ``auth`` filter). Messages come from the gateway's push hub
(:class:`~.hub.PushHub`, one per gateway, shared by every push route), which sources feed: the
event bus (``push.bus`` in the config), Python sources (``push.sources``), or Python code calling
``hub.publish`` (the hub, :class:`edgeway.gateway.actions.push.hub.PushHub`, is the ``"push"``
component: ``gateway.env.components["push"]``).

The request decides the transport: ``Upgrade: websocket`` → :mod:`.websocket`; any other GET →
:mod:`.sse`.

    client ──WS/SSE──► gateway push route ──► PushHub ◄── BusSource ◄── NATS / RabbitMQ ◄── services
"""

from edgeway.gateway.actions.push.messages import PushMessage
from edgeway.gateway.actions.push.sources import LocalSource, PushSink, PushSource

__all__ = ["LocalSource", "PushMessage", "PushSink", "PushSource"]
