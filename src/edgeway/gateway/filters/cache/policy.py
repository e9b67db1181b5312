"""Whether a response may be stored, and for how long (RFC 9111 §3 and §4.2, as a shared cache).

A response is stored when all of these hold, otherwise :meth:`StorePolicy.decide` names why not
(the reason is a metric label):

* its status is one the rule lists, and it arrived complete;
* ``Cache-Control`` has no ``no-store``, no unqualified ``private`` or ``no-cache`` (edgeway does
  not revalidate) and no malformed or conflicting ``max-age``/``s-maxage``;
* it sets no cookie (unless ``private="set-cookie"`` / ``no-cache="set-cookie"`` tells a shared
  cache to drop that field, which it then does);
* it is not a partial aggregate (``X-Edgeway-Completed: false``);
* its ``Vary`` names only headers the rule keys on (``Vary: *`` never);
* a request with ``Authorization`` that the gateway did not turn into an identity is stored only
  with ``public``, ``s-maxage`` or ``must-revalidate`` (§3.5);
* it is still fresh: lifetime (``s-maxage``, else ``max-age``, else ``Expires - Date``, else the
  rule's ``ttl``; capped by ``max_ttl``) minus its age (``Age`` or ``now - Date``) is positive.
"""

from __future__ import annotations

import email.utils
import logging
from dataclasses import dataclass

from edgeway.gateway.filters.cache.directives import parse_cache_control
from edgeway.gateway.filters.cache.store import Entry
from edgeway.http.exchange import Headers

log = logging.getLogger("edgeway.gateway.filters.cache")

# Headers that belong to one exchange, not to the stored response: the hit adds its own.
_PER_REQUEST = frozenset(
    {b"x-request-id", b"traceparent", b"age", b"content-length", b"transfer-encoding", b"connection"}
)
# (route, header names) already warned about, so a busy route logs its Vary problem once.
_warned: set[tuple[str, tuple[bytes, ...]]] = set()


@dataclass(frozen=True, slots=True)
class StorePolicy:
    """A route's storing rules, computed once when the route is built."""

    route_id: str
    statuses: frozenset[int]
    ttl: float
    max_ttl: float | None
    vary: frozenset[bytes]  # lower-cased names the key includes

    def decide(
        self, status: int, headers: Headers, body: bytes, now: float, *, unverified_authorization: bool
    ) -> Entry | str:
        """An entry to store, or the reason the response is not stored."""
        if status not in self.statuses:
            return "status"
        cc_lines: list[bytes] = []
        vary: list[bytes] = []
        date: bytes | None = None
        expires: bytes | None = None
        age_header: bytes | None = None
        cookie = False
        for name, value in headers:
            lname = name.lower()
            if lname == b"cache-control":
                cc_lines.append(value)
            elif lname == b"vary":
                vary.extend(token.strip().lower() for token in value.split(b","))
            elif lname == b"date":
                date = value
            elif lname == b"expires":
                expires = value
            elif lname == b"age":
                age_header = value
            elif lname == b"set-cookie":
                cookie = True
            elif lname == b"x-edgeway-completed" and value.strip().lower() == b"false":
                return "partial"
        cc = parse_cache_control(cc_lines)
        if cc.invalid:
            return "invalid-cache-control"
        if cc.no_store:
            return "no-store"
        if cc.private:
            return "private"
        if cc.no_cache:
            return "no-cache"
        dropped = {f.encode("latin-1") for f in (*cc.private_fields, *cc.no_cache_fields)}
        if cookie and b"set-cookie" not in dropped:
            return "set-cookie"
        if unverified_authorization and not (cc.public or cc.s_maxage is not None or cc.must_revalidate):
            return "authorization"
        unkeyed = [token for token in vary if token and token not in self.vary]
        if unkeyed:
            if b"*" not in unkeyed and (self.route_id, tuple(unkeyed)) not in _warned:
                _warned.add((self.route_id, tuple(unkeyed)))
                log.warning(
                    "cache: route %r: responses vary on %s; add it to cache.vary to store them",
                    self.route_id,
                    b", ".join(unkeyed).decode("latin-1"),
                )
            return "vary"
        date_at = http_date(date) if date is not None else None
        if cc.s_maxage is not None:
            lifetime: float = cc.s_maxage
        elif cc.max_age is not None:
            lifetime = cc.max_age
        elif expires is not None:
            expires_at = http_date(expires)
            # An invalid Expires (often "0" or "-1") means already expired (§5.3).
            lifetime = 0.0 if expires_at is None else expires_at - (date_at if date_at is not None else now)
        else:
            lifetime = self.ttl
        if self.max_ttl is not None:
            lifetime = min(lifetime, self.max_ttl)
        age = max(0.0, now - date_at) if date_at is not None else 0.0
        if age_header is not None and age_header.strip().isdigit():
            age = max(age, float(age_header))
        if lifetime - age <= 0:
            return "stale"
        kept = [(n, v) for n, v in headers if (low := n.lower()) not in _PER_REQUEST and low not in dropped]
        return Entry(status, kept, body, now - age, now + lifetime - age)


def http_date(value: bytes) -> float | None:
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1"))
    except (ValueError, IndexError):
        return None
    return None if parsed is None else float(email.utils.mktime_tz(parsed))
