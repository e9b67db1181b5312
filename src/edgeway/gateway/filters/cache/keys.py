"""Cache keys: what makes two requests share a stored response.

The key is a hash of: the route id, the method class (GET and HEAD share entries: a HEAD is
answered from a stored GET), the host, the normalised path, the normalised query, the value of
every configured ``vary`` header, and the caller's subject when the request carries an identity
(unless the rule says ``shared: true``). Each part is length-prefixed before hashing, so no
value can be crafted to collide with another split of the same bytes.

The key is ``<route id>|<path>|<hash as hex>``: the route and path in the clear let a purge find
a route's entries, or those under a path, by key alone (:mod:`.purge`), in memory and in Redis.
Route ids never hold ``|`` and the hash has a fixed length, so the path may hold anything.

Query normalisation keeps meaning: parameters are ordered by name with the order of repeated
names kept (``a=2&a=1`` stays different from ``a=1&a=2``, since backends read "the first" or
"the list"), percent-encoding is normalised as RFC 3986 §6.2.2 allows (unreserved characters
decoded, hex digits upper-cased), and ``+`` stays distinct from ``%20`` because backends
disagree on whether ``+`` means a space. Empty pairs (``a=1&&b``) are dropped.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from edgeway.gateway.core.pipeline import RequestContext

_PCT = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ABSENT = b"\xff"  # a header that is absent differs from one that is present but empty
_HASH_HEX = 40  # BLAKE2b, 160 bits


def _pct(found: re.Match[bytes]) -> bytes:
    byte = int(found.group(1), 16)
    return bytes((byte,)) if byte in _UNRESERVED else b"%" + found.group(1).upper()


def normalize_query(query: bytes, ignore: frozenset[bytes] = frozenset()) -> bytes:
    """``b=2&a=%7e&a=1`` → ``a=~&a=1&b=2`` (see the module docstring)."""
    if not query:
        return b""
    pairs: list[tuple[bytes, bytes]] = []
    for part in query.split(b"&"):
        if not part:
            continue
        if b"%" in part:
            part = _PCT.sub(_pct, part)
        name = part.split(b"=", 1)[0]
        if name in ignore:
            continue
        pairs.append((name, part))
    pairs.sort(key=lambda pair: pair[0])  # stable: repeated names keep their order
    return b"&".join(part for _, part in pairs)


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A route's key recipe, computed once when the route is built."""

    route_id: bytes
    vary: tuple[bytes, ...]  # lower-cased header names
    ignore_query: frozenset[bytes]
    shared: bool

    def key(self, ctx: RequestContext) -> bytes:
        ex = ctx.ex
        path = ctx.match.path.encode()
        parts = [
            self.route_id,
            b"GET",  # HEAD is answered from GET entries; other methods are never cached
            ex.host.lower(),
            path,
            normalize_query(ex.query, self.ignore_query),
        ]
        if self.vary:
            found: dict[bytes, list[bytes]] = {}
            for name, value in ex.headers:
                lname = name.lower()
                if lname in self.vary:
                    found.setdefault(lname, []).append(value.strip())
            parts.extend(b", ".join(found[name]) if name in found else _ABSENT for name in self.vary)
        identity = ctx.identity
        if identity is not None and not self.shared:
            parts.append(b"user:" + identity.subject.encode())
        else:
            parts.append(b"shared")
        h = hashlib.blake2b(digest_size=_HASH_HEX // 2)
        for part in parts:
            h.update(len(part).to_bytes(4, "big"))
            h.update(part)
        return b"%b|%b|%b" % (self.route_id, path, h.hexdigest().encode())


def split_key(key: bytes) -> tuple[bytes, bytes]:
    """The route id and the path of a key made by :meth:`KeySpec.key`."""
    route, _, rest = key.partition(b"|")
    return route, rest[: -(_HASH_HEX + 1)]
