"""Python endpoints: async functions registered from a module named in the config (issue 3).

Placeholder until the work that owns it lands: a route with a `endpoint` action is refused at start.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.errors import GatewayError
from edgeway.gateway.pipeline import GatewayEnv, Handler


def build_endpoint(route: Route, env: GatewayEnv) -> Handler:
    raise GatewayError(f"route {route.id!r}: the 'endpoint' action is not available in this build yet")
