"""Build the cache filter of a route.

Only :func:`build_cache` lives here: every gateway imports this module (the runtime's filter
registry), and only gateways with a caching route load the rest of the cache.
"""

from __future__ import annotations

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.core.pipeline import Filter, GatewayEnv

__all__ = ["build_cache"]


def build_cache(route: Route, env: GatewayEnv) -> Filter | None:
    rule = route.cache
    if rule is None:
        return None
    if route.push is not None:
        raise GatewayError(f"route {route.id!r}: a push channel cannot be cached; remove 'cache'")
    assert route.id is not None
    from edgeway.gateway.filters.cache.filter import CacheFilter
    from edgeway.gateway.filters.cache.shared import ResponseCache

    cache = env.shared("cache", lambda: ResponseCache(env.config.cache, env.metrics))
    return CacheFilter(route.id, rule, cache)
