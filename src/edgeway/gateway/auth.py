"""Authentication at the edge: JWT verification, route policies, identity headers (issue 4).

Placeholder until the work that owns it lands: a route configuring `auth` is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_auth(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    if route.auth is not None:
        raise GatewayError(f"route {route.id!r}: 'auth' is not available in this build yet")
    return None
