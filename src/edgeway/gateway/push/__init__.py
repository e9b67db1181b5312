"""Push to clients over WebSocket and Server-Sent Events (issue 3).

Placeholder until the work that owns it lands: a route with a `push` action is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_push(route: Route, env: GatewayEnv) -> Handler:
    raise GatewayError(f"route {route.id!r}: the 'push' action is not available in this build yet")
