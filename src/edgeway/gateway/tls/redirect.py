"""The plaintext listener of ``listen.http_redirect``: every request is answered with
``308 Permanent Redirect`` to the same host, path and query on the HTTPS port (308 keeps the
method and body, where 301 lets clients turn a POST into a GET).

The Host header is the client's to write, so it is checked before it goes into a Location: it
must be a well-formed host name or IP address that the gateway serves (a name of its
certificates, or ``http_redirect.hosts``). Anything else is answered 421 without a Location:
the gateway never redirects a client, or a cache in between, to a name it does not serve.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from edgeway.http.exchange import Exchange
from edgeway.pki.names import covers

__all__ = ["HttpsRedirect", "split_host"]

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# Request-target bytes copied as they are into the Location; anything else is percent-encoded
# (the engine already refuses controls and spaces; this keeps the header plain ASCII regardless).
_SAFE = frozenset(range(0x21, 0x7F))


def split_host(host: bytes) -> tuple[str, bool] | None:
    """The host of a Host header value, normalised, and whether it is an IPv6 address; None
    when it is not a plain DNS name or IP address (with an optional port)."""
    try:
        text = host.decode("ascii").strip().lower()
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return None
        try:
            return str(ipaddress.IPv6Address(literal)), True
        except ValueError:
            return None
    name, colon, port = text.partition(":")
    if colon and not re.fullmatch(r"[0-9]{1,5}", port):
        return None
    name = name.rstrip(".")
    try:
        return str(ipaddress.IPv4Address(name)), False
    except ValueError:
        pass
    if len(name) > 253 or _NAME.fullmatch(name) is None:
        return None
    return name, False


class HttpsRedirect:
    """The handler of the redirect listener (an engine ``Handler`` that answers at once)."""

    def __init__(self, serves: Callable[[str], bool], https_port: int) -> None:
        self._serves = serves
        self._port = b"" if https_port == 443 else b":%d" % https_port

    @classmethod
    def for_hosts(cls, hosts: Sequence[str], https_port: int) -> HttpsRedirect:
        """Redirect the hosts ``hosts`` (names, ``*.`` wildcards, IP addresses) covers."""
        patterns = tuple(hosts)
        return cls(lambda host: any(covers(pattern, host) for pattern in patterns), https_port)

    def __call__(self, ex: Exchange) -> None:
        found = split_host(ex.host)
        if found is None or not self._serves(found[0]):
            ex.respond_problem(
                421,
                "Misdirected Request",
                "this server redirects only the host names it serves over HTTPS",
            )
        else:
            host, ipv6 = found
            authority = (b"[%b]" if ipv6 else b"%b") % host.encode("ascii")
            target = ex.target if ex.target.startswith(b"/") else b"/"
            location = b"https://" + authority + self._port + _escape(target)
            ex.respond(
                308,
                [(b"location", location), (b"content-type", b"text/plain; charset=utf-8")],
                b"Use HTTPS: " + location + b"\n",
            )
        ex.handler_done()


def _escape(target: bytes) -> bytes:
    if all(byte in _SAFE for byte in target):
        return target
    return b"".join(bytes([b]) if b in _SAFE else b"%%%02X" % b for b in target)
