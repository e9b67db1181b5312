"""What a cache purge removes: every entry, a route's entries, the entries under a path prefix,
or a route's entries under a prefix (:class:`PurgeSelector`).

A cache key (:mod:`.keys`) starts with the route id and the path the route matched, so a purge
finds its entries by key alone: in memory by walking the keys, in Redis with ``SCAN MATCH``.
A prefix works on whole segments: ``/products`` matches ``/products`` and ``/products/7``, not
``/products-old``; a prefix ending in ``/`` matches what starts with it (``/`` matches all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from edgeway.gateway.filters.cache.keys import split_key

_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


class PurgeRequestError(ValueError):
    """A purge request that does not say clearly what to purge (answered 400)."""


@dataclass(frozen=True, slots=True)
class PurgeSelector:
    """Which entries a purge removes; both None: every entry."""

    route: str | None = None
    prefix: str | None = None

    def matches(self, key: bytes) -> bool:
        """Whether the entry under ``key`` (without any store prefix) is purged."""
        route, path = split_key(key)
        if self.route is not None and route != self.route.encode():
            return False
        if self.prefix is None:
            return True
        prefix = self.prefix.encode()
        if prefix.endswith(b"/"):
            return path.startswith(prefix)
        return path == prefix or path.startswith(prefix + b"/")

    def redis_pattern(self, key_prefix: bytes) -> bytes:
        """A ``SCAN MATCH`` pattern that finds at least the purged entries under ``key_prefix``
        (:meth:`matches` decides on each)."""
        pattern = _glob_escape(key_prefix)
        if self.route is not None:
            pattern += _glob_escape(self.route.encode()) + b"|"
            if self.prefix is not None:
                pattern += _glob_escape(self.prefix.encode())
        return pattern + b"*"

    def describe(self) -> dict[str, Any]:
        return {"route": self.route, "prefix": self.prefix}

    def encode(self) -> bytes:
        """The wire form other gateways decode (:meth:`decode`)."""
        return orjson.dumps(self.describe())

    @classmethod
    def decode(cls, data: bytes) -> PurgeSelector:
        """A selector as :meth:`encode` wrote it; :class:`PurgeRequestError` for anything else."""
        try:
            found = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise PurgeRequestError("not JSON") from None
        if not isinstance(found, dict):
            raise PurgeRequestError("not a JSON object")
        route, prefix = found.get("route"), found.get("prefix")
        if not (route is None or isinstance(route, str)) or not (prefix is None or isinstance(prefix, str)):
            raise PurgeRequestError("route and prefix must be strings or null")
        return cls(route, prefix)

    @classmethod
    def from_mapping(cls, found: Any) -> PurgeSelector:
        """From ``{"route": ..., "prefix": ...}`` or ``{"all": true}``."""
        if not isinstance(found, dict):
            raise PurgeRequestError("the purge request must be a JSON object")
        unknown = sorted(set(found) - {"route", "prefix", "all"})
        if unknown:
            raise PurgeRequestError(f"unknown member {unknown[0]!r}: give route, prefix, or all: true")
        route, prefix, everything = found.get("route"), found.get("prefix"), found.get("all")
        if route is not None and (not isinstance(route, str) or not route):
            raise PurgeRequestError("route must be a route id")
        if prefix is not None and (not isinstance(prefix, str) or not prefix.startswith("/")):
            raise PurgeRequestError("prefix must be a path starting with '/'")
        if everything not in (None, True, False):
            raise PurgeRequestError("all must be true or false")
        if everything is True and (route is not None or prefix is not None):
            raise PurgeRequestError("all: true purges everything; give it alone")
        if everything is not True and route is None and prefix is None:
            raise PurgeRequestError("say what to purge: route, prefix (or both), or all: true")
        return cls(route, prefix)

    @classmethod
    def from_request(cls, query: bytes, body: bytes) -> PurgeSelector:
        """From the query string (``?route=...&prefix=...`` or ``?all=true``) or a JSON body."""
        if query and body:
            raise PurgeRequestError("give the purge in the query string or in a JSON body, not both")
        if body:
            try:
                given = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise PurgeRequestError("the body is not JSON") from None
            return cls.from_mapping(given)
        params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        found: dict[str, Any] = {}
        for name, values in params.items():
            if len(values) > 1:
                raise PurgeRequestError(f"{name} is given {len(values)} times")
            found[name] = values[0]
        if "all" in found:
            if found["all"] not in ("true", "1"):
                raise PurgeRequestError("all must be true")
            found["all"] = True
        return cls.from_mapping(found)


def _glob_escape(value: bytes) -> bytes:
    return _GLOB_SPECIAL.sub(rb"\\\1", value)
