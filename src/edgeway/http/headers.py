"""Header rules shared by the server and the proxy: hop-by-hop sets and value checks."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final

# RFC 9110 §7.6.1 hop-by-hop headers, plus the de-facto ones (Proxy-*, Keep-Alive).
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# RFC 9110 §7.2 / RFC 3986 §3.2.2: uri-host [":" port]. IP-literal, or a reg-name (which covers
# IPv4 addresses), never empty for http. Anything else would be copied into X-Forwarded-Host and
# matched against route hosts. HTTP/1.1's Host and HTTP/2's :authority are both checked with it.
HOST_SYNTAX: Final = re.compile(
    rb"(?:\[(?:[0-9A-Fa-f:.]+|v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+)\]"
    rb"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+)"
    rb"(?::[0-9]{0,5})?"
)

_FORBIDDEN_IN_VALUE: Final = (b"\x00", b"\r", b"\n")


def value_is_safe(value: bytes) -> bool:
    """No NUL, CR or LF: those split or truncate headers in some upstream parsers."""
    return not any(c in value for c in _FORBIDDEN_IN_VALUE)


def connection_tokens(value: bytes) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",") if t.strip()}


def only_chunked(transfer_encoding: bytes) -> bool:
    """True when a Transfer-Encoding field (its lines joined by commas) names exactly one coding,
    ``chunked``. The engine decodes no other coding: accepting ``gzip, chunked`` and forwarding
    the decoded chunks without the gzip would hand the next hop bytes it cannot read. Empty list
    elements are ignored (RFC 9110 §5.6.1)."""
    codings = [t for t in transfer_encoding.split(b",") if t.strip()]
    return len(codings) == 1 and codings[0].strip().lower() == b"chunked"


_STATUS_REASONS: Final = {
    100: b"Continue",
    101: b"Switching Protocols",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    499: b"Client Closed Request",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def reason_phrase(status: int) -> bytes:
    found = _STATUS_REASONS.get(status)
    if found is None:
        # Statuses the gateway passes on from services (409, 422...): the standard phrase.
        try:
            found = HTTPStatus(status).phrase.encode()
        except ValueError:
            found = b"Unknown"
        _STATUS_REASONS[status] = found
    return found


_STATUS_LINES: Final[dict[int, bytes]] = {}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        # Bounded: only statuses 100-999 reach here (the parser and the gateway check them).
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason_phrase(status))
    return line
