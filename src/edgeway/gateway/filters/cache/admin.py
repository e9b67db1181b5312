"""``POST /cache/purge`` on the admin port: remove stored responses before they expire.

What to purge comes in the query string (``?route=products&prefix=/products/7``, ``?all=true``)
or as a JSON body (``{"route": "products", "prefix": "/products/7"}``, ``{"all": true}``); see
:mod:`.purge`. The answer says how many entries went from this gateway's memory and from Redis;
with Redis, every gateway sharing its ``key_prefix`` purges its memory too.
"""

from __future__ import annotations

from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.filters.cache.purge import PurgeRequestError, PurgeSelector
from edgeway.gateway.filters.cache.shared import ResponseCache
from edgeway.http.errors import BodyTooLarge
from edgeway.http.exchange import Exchange

_MAX_BODY = 64 * 1024


async def purge_cache(gateway: Gateway, ex: Exchange) -> None:
    if ex.method != b"POST":
        ex.respond_problem(405, "Method Not Allowed", headers=[(b"allow", b"POST")])
        return
    cache = gateway.env.components.get("cache")
    if not isinstance(cache, ResponseCache):
        ex.respond_problem(
            409, "Conflict", "no route of this gateway caches responses: there is nothing to purge"
        )
        return
    try:
        selector = PurgeSelector.from_request(ex.query, await ex.body.read_all(_MAX_BODY))
    except BodyTooLarge:
        ex.respond_problem(413, "Content Too Large", f"a purge request is at most {_MAX_BODY} bytes")
        return
    except PurgeRequestError as exc:
        ex.respond_problem(400, "Bad Request", str(exc))
        return
    caching = sorted(str(route.id) for route in gateway.config.routes if route.cache is not None)
    if selector.route is not None and selector.route not in caching:
        ex.respond_problem(
            404,
            "Not Found",
            f"no route {selector.route!r} with a cache (routes with one: {', '.join(caching)})",
            routes=caching,
        )
        return
    result = await cache.purge(selector)
    purged = {"memory": result.memory, "redis": result.redis}
    if result.redis_error is not None:
        ex.respond_problem(
            503,
            "Service Unavailable",
            f"this gateway's memory was purged, but not Redis, and the other gateways were not told: "
            f"{result.redis_error}",
            purged=purged,
            **selector.describe(),
        )
        return
    ex.respond_json(200, {"purged": purged, **selector.describe(), "shared": cache.redis is not None})
