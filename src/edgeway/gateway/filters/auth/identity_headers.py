"""The identity header contract between the gateway and its services.

Inbound, every header a client could use to pose as someone (``X-User-*``, ``X-Edgeway-*``, the
configured identity header names and any configured extras) is removed on every route, so a
service behind the gateway can trust these headers to come from the gateway. Outbound, a verified
token becomes headers in the shape :mod:`edgeway.service.identity` reads::

    X-Edgeway-Subject: alice
    X-Edgeway-Roles: customer,support          (comma-separated)
    X-Edgeway-Scopes: orders:read profile      (space-separated, like the scope claim)
    X-Edgeway-Client: web                      (the client_id claim, when the token has one)
    X-Edgeway-Claims: eyJzdWIiOi...            (base64url JSON of every claim; opt-in)
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from edgeway.gateway.filters.auth.config import GatewayAuth
from edgeway.http.exchange import Headers

_FORBIDDEN_IN_VALUE = frozenset(b"\r\n\x00")


class HeaderScrubber:
    """Removes spoofable headers from a request's header list, and their spellings with ``_`` for
    ``-`` (which many frameworks treat as the same header).

    Runs on every request of every route when ``auth`` is configured, so the common case (no such
    header) allocates nothing and looks at one byte per header: only names whose first byte can
    start a stripped name are lower-cased and compared.
    """

    __slots__ = ("_first", "_names", "_prefixes")

    def __init__(self, prefixes: Iterable[str], names: Iterable[str]) -> None:
        # Compared with '_' read as '-' on both sides (see __call__).
        self._prefixes = tuple(p.lower().replace("_", "-").encode() for p in prefixes)
        self._names = frozenset(n.lower().replace("_", "-").encode() for n in names)
        starts = {p[:1] for p in self._prefixes} | {n[:1] for n in self._names}
        self._first = frozenset(s.lower() for s in starts) | frozenset(s.upper() for s in starts)

    @classmethod
    def for_gateway(cls, auth: GatewayAuth, *extra_names: str) -> HeaderScrubber:
        return cls(auth.stripped_prefixes(), [*auth.stripped_names(), *extra_names])

    def __call__(self, headers: Headers) -> Headers:
        """``headers`` itself when nothing is stripped, else a new list without them."""
        first = self._first
        out: Headers | None = None
        for index, pair in enumerate(headers):
            name = pair[0]
            if name[:1] in first:
                lname = name.lower()
                if 0x5F in lname:  # "_", as a byte value: a memchr (a bytes needle is tried as an int first)
                    # X_Edgeway_Subject: CGI, WSGI and several servers read it as X-Edgeway-Subject.
                    lname = lname.replace(b"_", b"-")
                if lname.startswith(self._prefixes) or lname in self._names:
                    if out is None:
                        out = headers[:index]
                    continue
            if out is not None:
                out.append(pair)
        return headers if out is None else out


class IdentityEncoder:
    """Turns verified claims into the forwarded identity headers (once per token: cached by the
    caller)."""

    __slots__ = ("_claims", "_client", "_forward_claims", "_roles", "_scopes", "_subject")

    def __init__(self, auth: GatewayAuth) -> None:
        names = auth.headers
        self._subject = names.subject.lower().encode()
        self._roles = names.roles.lower().encode()
        self._scopes = names.scopes.lower().encode()
        self._client = names.client.lower().encode()
        self._claims = names.claims.lower().encode()
        self._forward_claims = names.forward_claims

    def encode(
        self,
        subject: str,
        roles: Iterable[str],
        scopes: Iterable[str],
        client_id: str | None,
        claims: Mapping[str, Any],
    ) -> Headers:
        out: Headers = [
            (self._subject, _value(subject, "sub")),
            (self._roles, _value(",".join(sorted(roles)), "roles")),
            (self._scopes, _value(" ".join(sorted(scopes)), "scope")),
        ]
        if client_id is not None:
            out.append((self._client, _value(client_id, "client_id")))
        if self._forward_claims:
            encoded = base64.urlsafe_b64encode(orjson.dumps(dict(claims))).rstrip(b"=")
            out.append((self._claims, encoded))
        return out


def _value(text: str, claim: str) -> bytes:
    raw = text.encode("utf-8")
    # A signed token from our own issuer never carries these, but a header value with CR/LF would
    # split the upstream request: refuse the token rather than forward it.
    if _FORBIDDEN_IN_VALUE.intersection(raw):
        from edgeway.security.errors import TokenInvalid  # the rare path; see auth.py on imports

        raise TokenInvalid("malformed", f"claim {claim!r} holds characters that cannot go in a header")
    return raw
