"""Request validation: body size and JSON schema per route (issue 4).

Placeholder until the work that owns it lands: a route configuring `validate` is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_validation(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    if route.validate_request is not None:
        raise GatewayError(f"route {route.id!r}: 'validate' is not available in this build yet")
    return None
