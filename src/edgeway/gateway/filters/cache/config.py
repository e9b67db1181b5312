"""Config of the response cache: what a route caches (``cache`` on a route) and where cached
responses are kept (``cache`` at the top level)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import HeaderName, StrictModel
from edgeway.gateway.config.units import ByteSize, Duration


class CacheRule(StrictModel):
    """Cache responses of this route for a time (GET and HEAD; see docs/cache.md)."""

    ttl: Duration = Field(
        gt=0,
        description="Freshness of a response whose headers give none (`max-age`, `s-maxage`, `Expires`).",
    )
    max_ttl: Duration | None = Field(
        None, gt=0, description="Upper bound on any freshness, including the origin's; `null` none."
    )
    vary: list[HeaderName] = Field(
        default_factory=list,
        description="Request headers whose values are part of the key (e.g. `Accept-Language`). A "
        "response whose `Vary` names a header not listed here is not stored.",
    )
    statuses: list[int] = Field(
        default_factory=lambda: [200, 203, 204, 300, 301, 404, 410],
        min_length=1,
        description="Response statuses that may be stored.",
    )
    shared: bool = Field(
        False,
        description="On an authenticated route, share entries between callers. Off: the caller's "
        "subject is part of the key, so users never see each other's responses.",
    )
    ignore_query: list[str] = Field(
        default_factory=list,
        description="Query parameters left out of the key (tracking parameters such as `utm_source`).",
    )
    max_entry_bytes: ByteSize = Field(
        1024 * 1024, gt=0, description="Larger response bodies are passed through and not stored."
    )
    client_directives: Literal["ignore", "honor"] = Field(
        "ignore",
        description="Request `Cache-Control`: `ignore` it (the cache protects the services, as CDNs "
        "do) or `honor` `no-cache`, `no-store`, `max-age`, `min-fresh` and `only-if-cached`.",
    )
    coalesce: bool = Field(True, description="Concurrent misses for one key make one upstream call.")
    coalesce_timeout: Duration = Field(
        5.0,
        gt=0,
        description="A request waiting for another's upstream call goes upstream itself after this.",
    )

    @field_validator("statuses")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        for status in value:
            if status < 200 or status > 599 or status in (206, 304):
                raise PydanticCustomError(
                    "cache_status",
                    "status {status} cannot be cached here (use 200-599 except 206 and 304)",
                    {"status": status},
                )
        return value

    @field_validator("vary")
    @classmethod
    def _vary(cls, value: list[str]) -> list[str]:
        lowered = [name.lower() for name in value]
        for name in lowered:
            if lowered.count(name) > 1:
                raise PydanticCustomError("vary", "header '{name}' is listed twice", {"name": name})
        return value


class CacheRedis(StrictModel):
    """A Redis server holding cached responses for every gateway that points at it."""

    url: str = Field(
        "redis://127.0.0.1:6379/0", pattern=r"^rediss?://", description="`redis://` or `rediss://` URL."
    )
    key_prefix: str = Field(
        "edgeway:cache:", min_length=1, description="Prefix of every key; give each gateway group its own."
    )
    timeout: Duration = Field(
        0.25, gt=0, description="Per command; a slower Redis counts as a miss (the request goes upstream)."
    )
    retry_after: Duration = Field(
        2.0, gt=0, description="After a Redis error, this long without trying Redis (memory only)."
    )


class CacheStore(StrictModel):
    """Where cached responses live: a bounded in-memory LRU, optionally a shared Redis."""

    max_bytes: ByteSize = Field(
        64 * 1024 * 1024,
        gt=0,
        description="The in-memory LRU's size (bodies and headers); least recently used entries go first.",
    )
    redis: CacheRedis | None = Field(
        None,
        description="Also keep entries in Redis, shared by several gateways (memory stays in front).",
    )
