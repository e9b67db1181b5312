"""An HTTP/2 request's header list, checked and turned into what an HTTP/1.1 request head gives
the engine (method, target, host, headers), so the handler cannot tell the two apart.

RFC 9113 §8.2 and §8.3: field names are lower case, pseudo-header fields come first, once each,
and only the request ones; connection-specific fields (Connection, Keep-Alive, Proxy-Connection,
Transfer-Encoding, Upgrade) and a TE other than ``trailers`` make the request malformed, which is
a stream error (:class:`MalformedRequest`, answered with RST_STREAM PROTOCOL_ERROR). A request
that is well formed but refused by a limit is a :class:`~edgeway.http.errors.RequestRejected`,
answered with a response as on HTTP/1.1 (414, 431, 501).
"""

from __future__ import annotations

import re
from typing import Final

from edgeway.http.errors import RequestRejected
from edgeway.http.headers import HOST_SYNTAX
from edgeway.http.limits import ServerLimits

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §5.1 token, lower case only (RFC 9113 §8.2.1: an upper-case name is malformed).
_FIELD_NAME: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
# RFC 9113 §8.2.1: no NUL, CR or LF anywhere, no leading or trailing whitespace; and, as the
# HTTP/1.1 parser holds a value to (the request goes on as HTTP/1.1), no other control either.
_BAD_VALUE: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]|^[ \t]|[ \t]$")
# The pseudo-header fields become an HTTP/1.1 request line (the method and :path are copied into
# it verbatim): held to what the HTTP/1.1 parser accepts there, or a CR/LF, a space or a NUL in
# them would write a second request, or another target, to the service. Method: a token (RFC 9110
# §9.1); :path: visible ASCII (a space, a control or a non-ASCII byte is percent-encoded by any
# client); :scheme: RFC 3986 §3.1.
_METHOD: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH: Final = re.compile(rb"[\x21-\x7e]+")
_SCHEME: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*")
_CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_SINGLETONS: Final = {b"authorization": 1, b"content-type": 2}
_REQUEST_PSEUDO: Final = frozenset({b":method", b":scheme", b":path", b":authority"})


class MalformedRequest(Exception):
    """The header list breaks RFC 9113's rules: a stream error of type PROTOCOL_ERROR."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestHead:
    """What the engine needs from a request's header list."""

    __slots__ = (
        "content_length",
        "headers",
        "host",
        "method",
        "path",
        "query",
        "request_id",
        "target",
        "traceparent",
    )

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.path = b""
        self.query = b""
        self.host = b""
        self.headers: Headers = []
        self.content_length: int | None = None
        self.request_id = b""
        self.traceparent = b""


def request_head(fields: Headers, limits: ServerLimits) -> RequestHead:
    """Check a decoded header list and map it onto a request head; raises
    :class:`MalformedRequest` or :class:`RequestRejected`."""
    head = RequestHead()
    pseudo: dict[bytes, bytes] = {}
    headers = head.headers
    cookies: list[bytes] = []
    host: bytes | None = None
    regular = False
    size = 0
    singletons = 0
    for name, value in fields:
        if name[:1] == b":":
            if regular:
                raise MalformedRequest("a pseudo-header field after a regular one")
            if name not in _REQUEST_PSEUDO:
                raise MalformedRequest(f"pseudo-header field {name.decode('latin-1')!r} in a request")
            if name in pseudo:
                raise MalformedRequest(f"pseudo-header field {name.decode('latin-1')!r} twice")
            pseudo[name] = value
            continue
        regular = True
        size += len(name) + len(value) + 4
        if _FIELD_NAME.fullmatch(name) is None:
            raise MalformedRequest(f"invalid field name {name.decode('latin-1')!r}")
        if _BAD_VALUE.search(value) is not None:
            raise MalformedRequest(f"invalid value for field {name.decode('latin-1')!r}")
        if name in _CONNECTION_SPECIFIC:
            raise MalformedRequest(f"connection-specific field {name.decode('latin-1')!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise MalformedRequest("TE other than 'trailers'")
            continue  # hop-by-hop: nothing past the gateway reads it
        if name == b"cookie":
            # RFC 9113 §8.2.3: a client may split Cookie into one field per crumb; rejoined so
            # an HTTP/1.1 service and the filters see the one field HTTP/1.1 allows.
            cookies.append(value)
            continue
        if name == b"host":
            if host is not None:
                raise MalformedRequest("more than one Host field")
            host = value
        elif name == b"content-length":
            if not value.isdigit():
                raise MalformedRequest("invalid content-length")
            length = int(value)
            if head.content_length is not None and head.content_length != length:
                raise MalformedRequest("conflicting content-length fields")
            head.content_length = length
            continue  # one copy is added below, whatever the client repeated
        elif name in _SINGLETONS:
            # As on HTTP/1.1: with two, the gateway and the service could each act on another.
            bit = _SINGLETONS[name]
            if singletons & bit:
                raise RequestRejected(400, f"more than one {name.decode()} header")
            singletons |= bit
        elif name == b"x-request-id":
            head.request_id = value
        elif name == b"traceparent":
            head.traceparent = value
        headers.append((name, value))
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))
    _check_limits(len(headers), size, limits)
    method = pseudo.get(b":method")
    if not method:
        raise MalformedRequest("no :method")
    if _METHOD.fullmatch(method) is None:
        raise MalformedRequest(":method is not a token")
    head.method = method
    if method == b"CONNECT":
        raise RequestRejected(501, "CONNECT is not supported")
    scheme = pseudo.get(b":scheme")
    target = pseudo.get(b":path")
    if not scheme or not target:
        raise MalformedRequest("no :scheme or :path")
    if _SCHEME.fullmatch(scheme) is None:
        raise MalformedRequest("invalid :scheme")
    if _PATH.fullmatch(target) is None:
        raise MalformedRequest(":path holds a space, a control or a non-ASCII byte")
    authority = pseudo.get(b":authority")
    if authority is not None and host is not None and authority != host:
        # RFC 9113 §8.3.1: a Host that differs from :authority would let a request route by
        # one name and be checked against the other.
        raise MalformedRequest("Host differs from :authority")
    chosen = authority if authority is not None else host
    if not chosen or HOST_SYNTAX.fullmatch(chosen) is None:
        raise RequestRejected(400, "missing or invalid :authority")
    head.host = chosen
    if host is None:
        # RFC 9113 §8.3.1: a request converted to HTTP/1.1 carries a Host made from :authority.
        headers.append((b"host", chosen))
    if len(target) > limits.max_url_bytes:
        raise RequestRejected(414, f"request target longer than {limits.max_url_bytes} bytes")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS"):
        raise MalformedRequest(":path must be origin-form")
    if target.find(b"#") >= 0:
        raise RequestRejected(400, "fragment in request target")
    if head.content_length is not None:
        headers.append((b"content-length", b"%d" % head.content_length))
        max_body = limits.max_body_bytes
        if max_body is not None and head.content_length > max_body:
            raise RequestRejected(413, f"request body larger than {max_body} bytes")
    head.target = target
    head.path, _, head.query = target.partition(b"?")
    return head


def _check_limits(count: int, size: int, limits: ServerLimits) -> None:
    if count > limits.max_headers:
        raise RequestRejected(431, f"more than {limits.max_headers} request headers")
    if size > limits.max_header_bytes:
        raise RequestRejected(431, f"request headers larger than {limits.max_header_bytes} bytes")
