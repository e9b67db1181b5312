"""The rules for requests the gateway writes from code — aggregate calls, Python endpoints'
service calls, the service kit's clients — held to what the server accepts from a client.

A client's request line and headers are checked by the parser before anything reads them. A
request *built* from values (a path with a query value in it, a header from a service's answer)
has no parser in front of it: a CR/LF there splits one request into two on the service's
connection (request smuggling), a space ends the request target early. So every byte of a built
request line and header block is checked where the request is handed to the connection
(:func:`check_request`), with the parser's own rules:

- method: a token (RFC 9110 5.6.2);
- target: origin-form (``/`` first), visible ASCII only — no space, no control, no DEL, no
  byte past 0x7E (anything else is percent-encoded first: :func:`request_target`);
- header name: a token; header value: HTAB, SP, visible ASCII or obs-text (0x80-0xFF) — no
  CR, LF, NUL or other control.

A violation raises :class:`UnsafeRequest` (a ValueError) and nothing is sent.
"""

from __future__ import annotations

import re
from urllib.parse import quote

__all__ = [
    "UnsafeRequest",
    "check_header",
    "check_method",
    "check_request",
    "header_value_ok",
    "request_target",
]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"/[\x21-\x7e]*")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_VALUE_TEXT = re.compile(r"[\t\x20-\x7e\x80-\U0010ffff]*")
# A header block: lines of `name: value`, each ending in CRLF.
_BLOCK = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
# What a target keeps as is when percent-encoding (as HTTP clients do): the reserved and
# unreserved characters and '%' (an escape already made). '#' is not kept: a fragment has no
# place in a request.
_TARGET_SAFE = "!$%&'()*+,/:;=?@[]~"


class UnsafeRequest(ValueError):
    """A request built from values holds a byte its request line or headers cannot carry."""


def request_target(path: str) -> bytes:
    """``path`` (with its query) as a request target: what a request line cannot carry (space,
    controls, non-ASCII as UTF-8, ``"<>\\^`{|}#``) percent-encoded, escapes already made kept.
    UnsafeRequest when it is not origin-form (``/`` first: ``@host/x`` would name another host
    to a client that joins it to a base URL)."""
    if not path.startswith("/"):
        raise UnsafeRequest(f"a request path starts with '/', got {path[:100]!r}")
    return quote(path, safe=_TARGET_SAFE).encode("ascii")


def header_value_ok(value: str) -> bool:
    """Whether a header value (text) holds only what a header value may (no CR, LF, NUL or
    other control)."""
    return _VALUE_TEXT.fullmatch(value) is not None


def check_header(name: str, value: str) -> None:
    """UnsafeRequest unless ``name`` is a token and ``value`` a valid header value."""
    if not name.isascii() or _TOKEN.fullmatch(name.encode()) is None:
        raise UnsafeRequest(f"header name {name[:100]!r} is not a token")
    if not header_value_ok(value):
        raise UnsafeRequest(
            f"header {name!r} holds a control character (CR, LF, NUL...) a header value cannot carry"
        )


def check_method(method: str) -> None:
    """UnsafeRequest unless ``method`` is a token."""
    if not method.isascii() or _TOKEN.fullmatch(method.encode()) is None:
        raise UnsafeRequest(f"method {method[:50]!r} is not a token")


def check_request(method: bytes, target: bytes, headers: bytes) -> None:
    """UnsafeRequest unless the method, the target and the block of ``name: value\\r\\n`` header
    lines are what the server's parser would accept from a client."""
    if _TOKEN.fullmatch(method) is None:
        raise UnsafeRequest(f"method {method[:50]!r} is not a token")
    if _TARGET.fullmatch(target) is None:
        raise UnsafeRequest(
            f"request target {target[:100]!r} is not a '/' path of visible ASCII "
            "(a space, control or non-ASCII byte must be percent-encoded)"
        )
    if _BLOCK.fullmatch(headers) is None:
        raise UnsafeRequest(
            f"a header line is malformed or holds a control character: {_bad_line(headers)!r}"
        )


def _bad_line(headers: bytes) -> bytes:
    for line in headers.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if line and (not colon or _TOKEN.fullmatch(name) is None or _VALUE.fullmatch(value) is None):
            return line[:100]
    return headers[-100:]  # a block that does not end in CRLF
