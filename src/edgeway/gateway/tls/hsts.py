"""``Strict-Transport-Security`` on every response of an HTTPS listener.

The header is the listener's, not a route's: the handler in front of the gateway puts it among
the headers every response to the request carries (``Exchange.extra_headers``: problems, 404s
and proxied answers alike, never stored by the cache). Only a listener with ``tls.hsts`` has
this handler, so nothing changes for the others.
"""

from __future__ import annotations

from collections.abc import Awaitable

from edgeway.http.exchange import Exchange
from edgeway.http.server import Handler

__all__ = ["HstsHandler"]

_HEADER = b"strict-transport-security"


class HstsHandler:
    """``handler`` (the gateway), with the HSTS header on every response."""

    __slots__ = ("_handler", "_header")

    def __init__(self, handler: Handler, value: bytes) -> None:
        self._handler = handler
        self._header = (_HEADER, value)

    def __call__(self, ex: Exchange) -> Awaitable[None] | None:
        ex.extra_headers = [self._header]
        return self._handler(ex)
