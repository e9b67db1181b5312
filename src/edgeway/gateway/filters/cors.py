"""CORS per route and per gateway (the Fetch standard's CORS protocol), answered at the edge.

A route uses its own ``cors`` block, else the gateway's; ``enabled: false`` on a route turns the
gateway's off for it. The filter is the outermost one, so:

- a *preflight* (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
  here, before auth (browsers never send credentials on a preflight): 204 with the
  ``Access-Control-Allow-*`` headers when origin, method and headers are allowed, else 403 with
  no CORS headers. A preflight for a route whose ``methods`` do not list ``OPTIONS`` still reaches
  it: the runtime routes a preflight by the method it asks about (:func:`preflight_match`);
- an *actual* request from an allowed origin gets ``Access-Control-Allow-Origin`` (and
  credentials / expose headers) on whatever response follows, error responses included, so the
  page's script can read a 401 or 429; from another origin it gets no CORS headers and the browser
  withholds the response. ``Vary: Origin`` is always sent when the answer depends on the origin.

Services behind a CORS-enabled route should not add CORS headers themselves (a duplicated
``Access-Control-Allow-Origin`` fails in browsers); remove them with ``response_headers.remove``
if they do.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from edgeway.gateway.config.schema import GatewayConfig, Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import ADMIT, GatewayEnv, RequestContext, Verdict
from edgeway.gateway.filters.cors_config import CorsRule
from edgeway.http.exchange import Exchange, Headers

if TYPE_CHECKING:
    from edgeway.gateway.core.router import RouteMatch, Router

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
# Request headers a browser may send cross-origin without asking (Fetch "CORS-safelisted");
# content-type is left out: a preflight lists it only for values that are not safelisted.
_SAFELISTED = frozenset({b"accept", b"accept-language", b"content-language"})
_VARY_ORIGIN = (b"vary", b"Origin")
_VARY_PREFLIGHT = (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


def cors_rule(config: GatewayConfig, route: Route) -> CorsRule | None:
    """The CORS rule in force on a route: its own, else the gateway's; None when off."""
    rule = route.cors if route.cors is not None else config.cors
    return rule if rule is not None and rule.enabled else None


def preflight_match(
    router: Router, config: GatewayConfig, ex: Exchange, host: str, path: str
) -> RouteMatch | None:
    """For an OPTIONS request no route takes: the route a CORS preflight asks about, if that
    route has CORS. Called on the 404/405 path only, so routing costs nothing more."""
    asked = ex.header(_REQUEST_METHOD)
    if asked is None or ex.header(_ORIGIN) is None:
        return None
    found = router.match(asked.decode("latin-1").strip().upper(), host, path)
    if found is None or cors_rule(config, found.route.route) is None:
        return None
    return found


class CorsPolicy:
    """A :class:`CorsRule` compiled into byte strings and one origin pattern."""

    def __init__(self, rule: CorsRule) -> None:
        self.any_origin = "*" in rule.allow_origins
        self.exact = frozenset(o.lower().encode() for o in rule.allow_origins if o != "*" and "*" not in o)
        wildcards = [o.lower() for o in rule.allow_origins if o != "*" and "*" in o]
        self.pattern = (
            re.compile("|".join(_wildcard(o) for o in wildcards).encode(), re.IGNORECASE)
            if wildcards
            else None
        )
        self.credentials = rule.allow_credentials
        self.any_method = "*" in rule.allow_methods
        self.methods = frozenset(m.encode() for m in rule.allow_methods if m != "*")
        self.methods_value = ", ".join(m for m in rule.allow_methods if m != "*").encode()
        self.any_header = "*" in rule.allow_headers
        self.headers = frozenset(h.lower().encode() for h in rule.allow_headers if h != "*") | _SAFELISTED
        self.headers_value = ", ".join(h for h in rule.allow_headers if h != "*").encode()
        self.expose_value = ", ".join(rule.expose_headers).encode()
        self.max_age = None if rule.max_age is None else b"%d" % int(rule.max_age)
        # With `*` and no credentials the answer is the same for every origin: nothing varies.
        self.varies = not (self.any_origin and not self.credentials)

    def allows(self, origin: bytes) -> bool:
        if self.any_origin or origin in self.exact:
            return True
        return self.pattern is not None and self.pattern.fullmatch(origin) is not None

    def allow_origin_value(self, origin: bytes) -> bytes:
        return b"*" if self.any_origin and not self.credentials else origin

    def actual_headers(self, origin: bytes) -> Headers:
        """Headers for an actual (non-preflight) response to an allowed origin."""
        out: Headers = [(b"access-control-allow-origin", self.allow_origin_value(origin))]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        if self.expose_value:
            out.append((b"access-control-expose-headers", self.expose_value))
        if self.varies:
            out.append(_VARY_ORIGIN)
        return out

    def preflight_headers(self, ex: Exchange, origin: bytes) -> Headers | str:
        """Headers of a successful preflight answer, or why it is refused."""
        method = (ex.header(_REQUEST_METHOD) or b"").strip()
        if not self.any_method and method.upper() not in self.methods:
            return f"method {method.decode('latin-1')!r} is not allowed cross-origin"
        asked = ex.header(_REQUEST_HEADERS) or b""
        names = [n.strip().lower() for n in asked.split(b",") if n.strip()]
        if not self.any_header:
            refused = [n.decode("latin-1") for n in names if n not in self.headers]
            if refused:
                return f"header(s) {', '.join(refused)} are not allowed cross-origin"
        out: Headers = [(b"access-control-allow-origin", self.allow_origin_value(origin))]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        out.append((b"access-control-allow-methods", method if self.any_method else self.methods_value))
        allowed_headers = b", ".join(names) if self.any_header else self.headers_value
        if allowed_headers:
            out.append((b"access-control-allow-headers", allowed_headers))
        if self.max_age is not None:
            out.append((b"access-control-max-age", self.max_age))
        out.append(_VARY_PREFLIGHT)
        return out


def _wildcard(origin: str) -> str:
    """``https://*.example.com`` → one or more DNS labels in place of the ``*``."""
    head, _, tail = origin.partition("*.")
    return re.escape(head) + r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+" + re.escape(tail)


class CorsFilter:
    """The route's CORS filter: decides at once (a preflight is answered here)."""

    __slots__ = ("policy",)

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy

    def on_request(self, ctx: RequestContext) -> Verdict:
        policy = self.policy
        ex = ctx.ex
        origin = ex.header(_ORIGIN)
        if origin is None:
            if policy.varies:
                ex.add_response_header(*_VARY_ORIGIN)
            return ADMIT
        if ex.method == b"OPTIONS" and ex.header(_REQUEST_METHOD) is not None:
            _preflight(ctx, policy, origin)  # answered here
            return ADMIT
        if policy.allows(origin):
            for name, value in policy.actual_headers(origin):
                ex.add_response_header(name, value)
        elif policy.varies:
            ex.add_response_header(*_VARY_ORIGIN)
        return ADMIT


def build_cors(route: Route, env: GatewayEnv) -> CorsFilter | None:
    rule = cors_rule(env.config, route)
    if rule is None:
        return None
    if route.proxy is not None and route.proxy.grpc_web:
        rule = with_grpc_web(rule)
    return CorsFilter(CorsPolicy(rule))


# What a gRPC-Web client sends (grpc-web's and Envoy's lists) and what its script must read: a
# route that translates gRPC-Web adds them to its CORS rule, so a browser's call passes its
# preflight and sees the status whatever the rule lists.
_GRPC_WEB_HEADERS = ("content-type", "x-grpc-web", "x-user-agent", "grpc-timeout")
_GRPC_WEB_EXPOSED = ("grpc-status", "grpc-message", "grpc-status-details-bin")


def with_grpc_web(rule: CorsRule) -> CorsRule:
    """``rule`` allowing gRPC-Web's calls: POST, its request headers, its status exposed."""

    def plus(values: list[str], more: tuple[str, ...]) -> list[str]:
        if "*" in values:
            return values
        have = {v.lower() for v in values}
        return [*values, *(m for m in more if m.lower() not in have)]

    return rule.model_copy(
        update={
            "allow_methods": plus(rule.allow_methods, ("POST",)),
            "allow_headers": plus(rule.allow_headers, _GRPC_WEB_HEADERS),
            "expose_headers": plus(list(rule.expose_headers), _GRPC_WEB_EXPOSED),
        }
    )


def _preflight(ctx: RequestContext, policy: CorsPolicy, origin: bytes) -> None:
    ex = ctx.ex
    if not policy.allows(origin):
        raise Rejection(
            403, "Forbidden", f"origin {origin.decode('latin-1')!r} is not allowed", headers=[_VARY_PREFLIGHT]
        )
    headers = policy.preflight_headers(ex, origin)
    if isinstance(headers, str):
        raise Rejection(403, "Forbidden", headers, headers=[_VARY_PREFLIGHT])
    headers += [(b"x-request-id", ex.request_id), (b"traceparent", ctx.traceparent)]
    ex.respond(204, headers)
