"""Config of rate limiting: the token bucket of a route (``rate_limit``) and where the buckets
are kept (``rate_limits`` at the top level)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgeway.gateway.config.base import HeaderName, StrictModel
from edgeway.gateway.config.units import Duration


class RateLimitStore(StrictModel):
    """Where rate-limit buckets live: this process's memory or a shared Redis."""

    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="`memory`: buckets per gateway process; `redis`: one bucket shared by every gateway "
        "instance (an atomic Lua script per request).",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for the `redis` backend.")
    key_prefix: str = Field("edgeway:rl:", description="Prefix of every bucket key in Redis.")
    timeout: Duration = Field(
        0.25, gt=0, description="A Redis call slower than this counts as the store being down."
    )
    on_store_error: Literal["allow", "deny"] = Field(
        "allow",
        description="When Redis is down: `allow` lets requests through (fail open, logged and counted), "
        "`deny` answers 503 (fail closed).",
    )
    retry_interval: Duration = Field(
        1.0, ge=0, description="After a Redis failure, requests skip Redis for this long before trying again."
    )
    max_keys: int = Field(
        100_000, gt=0, description="`memory` backend: buckets kept; the least recently used go first."
    )
    trusted_proxy_hops: int = Field(
        0,
        ge=0,
        description="Proxies in front of the gateway whose `X-Forwarded-For` entries are trusted when "
        "keying by `ip`, counted from the right whoever the peer is; 0 uses the connection's address, "
        "or behind the gateway's `trusted_proxies` the first address in `X-Forwarded-For` (from the "
        "right) that is not one of them.",
    )


class RateLimitRule(StrictModel):
    """A token bucket per route, keyed by user, client id, API key or client address."""

    rate: int = Field(gt=0, description="Requests allowed per `per` (the bucket's refill rate).")
    per: Duration = Field(1.0, gt=0, description="The period `rate` is counted over.")
    burst: int | None = Field(
        None, gt=0, description="Bucket size: requests allowed at once; default `rate`."
    )
    key: Literal["user", "client", "api_key", "ip"] = Field(
        "ip",
        description="Whose bucket: `user` (token `sub`), `client` (token `client_id`), `api_key` (the "
        "`api_key_header` value) or `ip`. Without that identity the client address is used.",
    )
    api_key_header: HeaderName = Field(
        "X-API-Key", description="Header holding the API key for `key: api_key`."
    )
    headers: bool = Field(
        True, description="Send `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`."
    )

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.rate
