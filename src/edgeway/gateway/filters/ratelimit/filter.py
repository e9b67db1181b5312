"""Rate limiting per route: a token bucket per caller, answered with 429 and ``Retry-After``.

The caller is the verified user (``key: user``), the token's client (``client``), an API key
header (``api_key``, stored hashed) or the client address (``ip``: the connection's peer, or
behind the gateway's ``trusted_proxies`` the address the nearest untrusted hop had in
``X-Forwarded-For``; ``rate_limits.trusted_proxy_hops`` counts hops instead); a request without that
identity falls back to its address. Buckets are per route. Every response of a limited route
carries the IETF draft headers (``RateLimit-Limit`` the bucket size, ``RateLimit-Remaining`` the
whole tokens left, ``RateLimit-Reset`` seconds until the bucket is full again); a refused request
is a 429 problem with ``Retry-After`` (seconds until one token is back).

The filter runs after auth (so ``user`` and ``client`` keys see the verified identity) and before
validation, so a flood is refused before any body is read.
"""

from __future__ import annotations

import hashlib
import math

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import GatewayEnv, RequestContext, Verdict
from edgeway.gateway.filters.ratelimit.config import RateLimitRule
from edgeway.gateway.filters.ratelimit.store import make_buckets
from edgeway.gateway.upstream.forwarding import Forwarding
from edgeway.http.exchange import Exchange

_XFF = b"x-forwarded-for"


def client_address(ex: Exchange, trusted_hops: int) -> str:
    """The client's address: the connection's peer, or with ``trusted_hops`` proxies in front,
    the address the outermost trusted proxy saw (entries further left are the client's claims)."""
    if trusted_hops <= 0:
        return ex.client
    forwarded = ex.header(_XFF)
    chain = [part.strip() for part in forwarded.decode("latin-1").split(",")] if forwarded else []
    chain.append(ex.client)
    return chain[-(trusted_hops + 1)] if len(chain) > trusted_hops else chain[0]


def bucket_key(
    ctx: RequestContext, rule: RateLimitRule, api_key_header: bytes, trusted_hops: int, forwarding: Forwarding
) -> str:
    identity = ctx.identity
    kind = rule.key
    if kind == "user" and identity is not None:
        return "user:" + identity.subject
    if kind == "client" and identity is not None and identity.client_id is not None:
        return "client:" + identity.client_id
    if kind == "api_key":
        key = ctx.ex.header(api_key_header)
        if key:
            # Keys are credentials: buckets are named by a digest, never by the key.
            return "key:" + hashlib.sha256(key).hexdigest()[:32]
    if trusted_hops > 0:
        return "ip:" + client_address(ctx.ex, trusted_hops)
    # The gateway's trusted_proxies: the address the nearest proxy nobody vouches for saw.
    return "ip:" + forwarding.client_address(ctx.ex)


class RateLimitFilter:
    """The route's token buckets; the bucket store is awaited, so the request goes on in a task."""

    def __init__(self, route: Route, env: GatewayEnv, rule: RateLimitRule) -> None:
        store_config = env.config.rate_limits
        self.buckets = env.shared("rate-limits", lambda: make_buckets(store_config))
        self.rule = rule
        self.capacity = rule.capacity
        self.rate = rule.rate / float(rule.per)
        self.prefix = f"{route.id}:"
        self.api_key_header = rule.api_key_header.lower().encode()
        self.trusted_hops = store_config.trusted_proxy_hops
        self.forwarding = env.forwarding
        self.fail_closed = store_config.on_store_error == "deny"
        self.retry_interval = max(1, math.ceil(float(store_config.retry_interval)))
        self.send_headers = rule.headers
        self.limit_value = b"%d" % rule.capacity
        # Decisions made without the store (it was down): let through, or refused with 503.
        self.unavailable = env.metrics.counter(
            "edgeway_gateway_ratelimit_store_unavailable_total",
            "Rate-limited requests decided without the store (Redis down or slow), by route and "
            "outcome: allowed (on_store_error: allow) or refused (deny).",
            ("route", "outcome"),
        ).labels(str(route.id), "refused" if self.fail_closed else "allowed")
        decisions = env.metrics.counter(
            "edgeway_gateway_ratelimit_decisions_total",
            "Rate-limited requests by route and decision: allowed (a token was taken), limited "
            "(429), unavailable (decided without the store; see ..._store_unavailable_total).",
            ("route", "decision"),
        )
        self.allowed = decisions.labels(str(route.id), "allowed")
        self.limited = decisions.labels(str(route.id), "limited")
        self.undecided = decisions.labels(str(route.id), "unavailable")

    def on_request(self, ctx: RequestContext) -> Verdict:
        return self._limit(ctx)

    async def _limit(self, ctx: RequestContext) -> None:
        ex = ctx.ex
        rule = self.rule
        key = bucket_key(ctx, rule, self.api_key_header, self.trusted_hops, self.forwarding)
        take = await self.buckets.take(self.prefix + key, self.capacity, self.rate)
        if take is None:
            self.unavailable.inc()
            self.undecided.inc()
            if self.fail_closed:
                raise Rejection(
                    503,
                    "Service Unavailable",
                    "the rate limit store is unavailable",
                    headers=[(b"retry-after", b"%d" % self.retry_interval)],
                    reason="rate_limit_store_unavailable",
                )
            return
        if self.send_headers:
            ex.add_response_header(b"ratelimit-limit", self.limit_value)
            ex.add_response_header(b"ratelimit-remaining", b"%d" % take.remaining)
            ex.add_response_header(b"ratelimit-reset", b"%d" % math.ceil(take.reset))
        if take.allowed:
            self.allowed.inc()
        else:
            self.limited.inc()
            wait = max(1, math.ceil(take.retry_after))
            raise Rejection(
                429,
                "Too Many Requests",
                f"rate limit of {rule.rate} request(s) per {float(rule.per):g}s exceeded; retry in {wait}s",
                headers=[(b"retry-after", b"%d" % wait)],
                retry_after=wait,
                reason="rate_limited",
            )


def build_rate_limit(route: Route, env: GatewayEnv) -> RateLimitFilter | None:
    rule = route.rate_limit
    if rule is None:
        return None
    return RateLimitFilter(route, env, rule)
