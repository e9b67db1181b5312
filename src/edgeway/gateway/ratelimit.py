"""Rate limiting: token buckets in memory or Redis (issue 4).

Placeholder until the work that owns it lands: a route configuring `rate_limit` is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_rate_limit(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    if route.rate_limit is not None:
        raise GatewayError(f"route {route.id!r}: 'rate_limit' is not available in this build yet")
    return None
