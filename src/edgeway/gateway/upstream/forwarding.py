"""What the gateway tells a service about the client: the forwarding headers, one rule for all.

A forwarding header is a claim about the original request made by whoever connected to us
(``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP`` and the vendor variants in
:data:`FORWARDING_HEADERS`). A service behind the gateway reads these to learn the client's
address, scheme and host, so a client must not be able to write them:

* the peer is **not** a trusted proxy (the default: ``trusted_proxies`` is empty): every
  forwarding header the client sent is dropped, and the gateway writes its own
  ``X-Forwarded-For`` (the peer's address), ``X-Forwarded-Proto`` and ``X-Forwarded-Host``;
* the peer **is** a trusted proxy (its address is in ``trusted_proxies``): what it sent is kept,
  ``X-Forwarded-For`` and ``Forwarded`` are extended with the peer (RFC 7239 §4: each proxy adds
  itself), and ``X-Forwarded-Proto``/``-Host`` are written only when the proxy sent none (it saw
  the original request, the gateway did not).

The proxy (both of its paths, WebSocket upgrades included) and the calls of aggregates and
Python endpoints use this one module, so they agree.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

from edgeway.http.exchange import Exchange, Headers

# Lower-case names. Besides the standard and the X-Forwarded-* family: the client-address headers
# CDNs and load balancers set (frameworks read them as "the client's address"), and the
# original-URL headers some servers honour instead of the request line (a path past routing).
FORWARDING_HEADERS: Final = frozenset(
    {
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-server",
        b"x-forwarded-scheme",
        b"x-forwarded-ssl",
        b"x-forwarded-uri",
        b"x-forwarded",
        b"forwarded-for",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-original-forwarded-for",
        b"x-url-scheme",
        b"front-end-https",
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
        b"x-original-host",
    }
)

_XFF: Final = b"x-forwarded-for"
_XFP: Final = b"x-forwarded-proto"
_XFH: Final = b"x-forwarded-host"
_FORWARDED: Final = b"forwarded"
# Peers remembered per Forwarding: bounded, since a peer address is the client's choice.
_CACHE_MAX: Final = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``192.0.2.7`` (one address), ``::1``; ValueError names a bad entry."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


class Forwarding:
    """The forwarding rule of one gateway config (see the module docstring)."""

    __slots__ = ("_cache", "_networks")

    def __init__(self, trusted: Iterable[str] = ()) -> None:
        self._networks = parse_networks(trusted)
        self._cache: dict[str, bool] = {}

    def trusts(self, peer: str) -> bool:
        """Whether the connection's peer address is a trusted proxy."""
        if not self._networks:
            return False
        found = self._cache.get(peer)
        if found is None:
            try:
                address = ipaddress.ip_address(peer.partition("%")[0])  # drop an IPv6 zone
            except ValueError:
                found = False  # a Unix socket or an unknown peer: nobody vouches for it
            else:
                if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                    address = address.ipv4_mapped
                found = any(address in network for network in self._networks)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[peer] = found
        return found

    def lines(self, ex: Exchange, sent: Headers | None) -> bytes:
        """The forwarding header lines for the request ``ex`` forwards upstream; ``sent`` holds
        the forwarding headers the client sent (lower-case names), None when it sent none."""
        client = ex.client.encode()
        if sent is None or not self.trusts(ex.client):
            return own_lines(client, ex.scheme, ex.host)
        xff: list[bytes] = []
        forwarded: list[bytes] = []
        out: list[bytes] = []
        proto = host = False
        for name, value in sent:
            if name == _XFF:
                xff.append(value)
                continue
            if name == _FORWARDED:
                forwarded.append(value)
                continue
            proto = proto or name == _XFP
            host = host or name == _XFH
            out += (name, b": ", value, b"\r\n")
        xff.append(client)
        out += (b"x-forwarded-for: ", b", ".join(xff), b"\r\n")
        if not proto:
            out += (b"x-forwarded-proto: ", ex.scheme, b"\r\n")
        if not host:
            out += (b"x-forwarded-host: ", ex.host, b"\r\n")
        if forwarded:
            forwarded.append(_forwarded_element(ex.client, ex.scheme, ex.host))
            out += (b"forwarded: ", b", ".join(forwarded), b"\r\n")
        return b"".join(out)

    def lines_for(self, ex: Exchange) -> bytes:
        """:meth:`lines` for a caller that has not collected the client's forwarding headers
        (the calls of aggregates and Python endpoints)."""
        sent: Headers | None = None
        for name, value in ex.headers:
            lname = name.lower()
            if lname in FORWARDING_HEADERS:
                if sent is None:
                    sent = []
                sent.append((lname, value))
        return self.lines(ex, sent)

    def client_address(self, ex: Exchange) -> str:
        """The original client's address: the peer, or when the peer is a trusted proxy, the
        rightmost ``X-Forwarded-For`` entry that is not a trusted proxy (nginx's recursive
        real_ip): entries further left are claims no trusted proxy made."""
        peer = ex.client
        if not self.trusts(peer):
            return peer
        chain: list[str] = []
        for name, value in ex.headers:
            if name.lower() == _XFF:
                chain += (part.strip() for part in value.decode("latin-1").split(","))
        for entry in reversed(chain):
            if not entry:
                continue
            if not self.trusts(entry):
                return entry
            peer = entry
        return peer


# The gateway's own forwarding headers, for a peer nobody vouches for: % (client, scheme, host).
OWN_LINES: Final = b"x-forwarded-for: %b\r\nx-forwarded-proto: %b\r\nx-forwarded-host: %b\r\n"


def own_lines(client: bytes, scheme: bytes, host: bytes) -> bytes:
    return OWN_LINES % (client, scheme, host)


def _forwarded_element(peer: str, scheme: bytes, host: bytes) -> bytes:
    # RFC 7239 §6: an IPv6 node is bracketed and quoted; a host with ':' must be quoted. Host
    # has passed the server's RFC 9110 check, so it holds no quote or backslash.
    node = f'"[{peer}]"' if ":" in peer else peer
    return b'for=%b;proto=%b;host="%b"' % (node.encode(), scheme, host)
