"""Load shedding: a bound on concurrent requests per route (issue 6).

Placeholder until the work that owns it lands: a route configuring `concurrency` is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_concurrency(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    if route.concurrency is not None:
        raise GatewayError(f"route {route.id!r}: 'concurrency' is not available in this build yet")
    return None
