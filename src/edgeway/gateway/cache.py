"""The response cache: in-memory LRU and Redis, request coalescing (issue 3).

Placeholder until the work that owns it lands: a route configuring `cache` is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_cache(route: Route, env: GatewayEnv, next_handler: Handler) -> Handler | None:
    if route.cache is not None:
        raise GatewayError(f"route {route.id!r}: 'cache' is not available in this build yet")
    return None
