"""Sticky keys: what identifies a request for consistent hashing (``proxy.sticky``).

The key is a request header, a cookie or the authenticated subject; its 31-bit hash
(:func:`edgeway.resilience.hashing.stable_hash`) chooses the side of a split and the instance of
the chosen service by rendezvous hashing, so a key keeps its side and its instance across
requests, gateway processes and live reloads of the same config. A request without the key
(no such header or cookie, no token, an empty value) is balanced as if the route were not sticky.
"""

from __future__ import annotations

from edgeway.gateway.core.context import RequestContext
from edgeway.gateway.traffic.config import StickyRule
from edgeway.gateway.traffic.match import request_cookies
from edgeway.resilience.hashing import stable_hash

__all__ = ["StickyKey"]


class StickyKey:
    """Reads one request's sticky key, as configured."""

    __slots__ = ("_cookie", "_header", "source")

    def __init__(self, rule: StickyRule) -> None:
        self.source = rule.source
        self._header = rule.header.lower().encode() if rule.header is not None else None
        self._cookie = rule.cookie.encode() if rule.cookie is not None else None

    def __repr__(self) -> str:
        return f"<StickyKey {self.source}>"

    def raw(self, ctx: RequestContext) -> bytes | None:
        """The key itself, or None when the request has none (an empty value counts as none)."""
        header = self._header
        if header is not None:
            for name, value in ctx.ex.headers:
                if name.lower() == header:
                    return value.strip() or None
            return None
        if self._cookie is not None:
            return request_cookies(ctx.ex).get(self._cookie) or None
        identity = ctx.identity
        return identity.subject.encode() if identity is not None and identity.subject else None

    def hash(self, ctx: RequestContext) -> int | None:
        """The key's 31-bit hash, or None when the request has no key."""
        raw = self.raw(ctx)
        return stable_hash(raw) if raw is not None else None
