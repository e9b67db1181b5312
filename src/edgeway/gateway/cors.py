"""CORS per route and per gateway (issue 4).

Placeholder until the work that owns it lands: a route configuring `cors` is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_cors(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    if route.cors is not None:
        raise GatewayError(f"route {route.id!r}: 'cors' is not available in this build yet")
    return None
