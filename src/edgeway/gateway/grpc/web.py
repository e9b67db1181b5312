"""gRPC-Web at the gateway: browsers' gRPC, translated at the edge as Envoy's ``grpc_web`` does.

A browser cannot speak gRPC (no trailers, no control of HTTP/2 framing), so it sends
``application/grpc-web`` (or ``-text``, base64) over HTTP/1.1 or HTTP/2. On a route that opts in
(``proxy.grpc_web: true``) the gateway calls the service in real gRPC on the one gRPC proxy path
(:mod:`.proxy`: same filters, auth, limits, deadlines, guard) and only changes the two ends:

- **in** (:func:`web_request`): the body is read whole (gRPC-Web calls are unary or server
  streaming: a browser cannot stream a request body), decoded from base64 for ``-text``, and
  checked to be whole message frames *before* a stream is opened, so a malformed body is an
  ``INVALID_ARGUMENT`` and the service never sees half a call; the service gets
  ``content-type: application/grpc[+codec]`` (:meth:`WebResponse.to_upstream`) and the proxy's
  ``te: trailers`` and ``grpc-timeout``;
- **out** (:class:`WebResponse`): the proxy writes the answer through this object instead of
  the exchange; each message leaves as it arrives (base64 per chunk for ``-text``), and the
  trailers become the body's last frame (flag 0x80).

Errors the gateway makes itself are answered in gRPC-Web's form by the runtime's one error rule
(:func:`edgeway.gateway.grpc.status.respond_status`).
"""

from __future__ import annotations

import sys

from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.grpc.status import GrpcStatus
from edgeway.gateway.grpc.web_wire import (
    GrpcWebFormatError,
    check_frames,
    decode_text,
    encode_text,
    is_grpc_web,
    response_content_type,
    text_response,
    trailer_frame,
    upstream_content_type,
)
from edgeway.http.body import buffered_body
from edgeway.http.exchange import Exchange, Headers

__all__ = ["WebResponse", "web_request"]

_CONTENT_TYPE = b"content-type"
_NO_STATUS: Headers = [
    (b"grpc-status", b"%d" % GrpcStatus.INTERNAL),
    (b"grpc-message", b"the service's answer ended without a grpc-status"),
]


async def web_request(ex: Exchange) -> WebResponse | None:
    """For a gRPC-Web request: its body read, decoded and checked, put back whole on ``ex`` for
    the proxy to send, and the writer of its answer; None for any other request. A malformed
    body is a 400 (``INVALID_ARGUMENT``) before anything reaches the service."""
    content_type = ex.header(_CONTENT_TYPE)
    if content_type is None or not is_grpc_web(content_type):
        return None
    # The listener's limits.max_body_bytes bounds the body (a 413, RESOURCE_EXHAUSTED).
    body = await ex.body.read_all(sys.maxsize)
    text = content_type[:25].lower() == b"application/grpc-web-text"
    try:
        data = decode_text(body) if text else body
        check_frames(data)
    except GrpcWebFormatError as exc:
        raise Rejection(400, "Bad Request", str(exc)) from None
    ex.body = buffered_body(data)
    return WebResponse(
        ex, upstream_content_type(content_type), text_response(content_type, ex.header(b"accept"))
    )


class WebResponse:
    """Writes a service's gRPC answer to the client as gRPC-Web: the exchange's response methods
    the proxy uses (:meth:`H2Call._answer <edgeway.gateway.grpc.proxy.H2Call>`), translated.

    An answer that is not HTTP 200 is not gRPC (a proxy or load balancer in front of the
    service answered): it passes unchanged, and the client reads the HTTP status as gRPC-Web
    clients do."""

    __slots__ = ("_grpc", "ex", "request_id", "text", "upstream_type")

    def __init__(self, ex: Exchange, upstream_type: bytes, text: bool) -> None:
        self.ex = ex
        self.request_id = ex.request_id
        self.upstream_type = upstream_type
        self.text = text
        self._grpc = True  # False once a non-200 answer passes through unchanged

    def to_upstream(self, headers: Headers) -> None:
        """The request's headers for the service (in place): gRPC's content type."""
        for i, (name, _) in enumerate(headers):
            if name == _CONTENT_TYPE:
                headers[i] = (_CONTENT_TYPE, self.upstream_type)

    def _headers(self, headers: Headers) -> Headers:
        out: Headers = []
        upstream = None
        for name, value in headers:
            if name == _CONTENT_TYPE:
                upstream = value
            else:
                out.append((name, value))
        out.append((_CONTENT_TYPE, response_content_type(upstream, self.text, self.upstream_type)))
        return out

    def _body(self, data: bytes) -> bytes:
        return encode_text(data) if self.text else data

    def respond(self, status: int, headers: Headers, body: bytes = b"") -> None:
        """A trailers-only answer (a service's error before any message): the status stays in
        the headers, as the spec allows, and is also the body's trailer frame, which a browser
        reads without the CORS exposure headers need."""
        if status != 200:
            self.ex.respond(status, headers, body)
            return
        trailers = [(n, v) for n, v in headers if n.startswith(b"grpc-")]
        self.ex.respond(200, self._headers(headers), self._body(body + trailer_frame(trailers or _NO_STATUS)))

    def start(
        self, status: int, headers: Headers, content_length: int | None = None, first: bytes = b""
    ) -> None:
        if status != 200:
            self._grpc = False
            self.ex.start(status, headers, content_length, first)
            return
        # The length changes (base64, the trailer frame): the answer is streamed without one.
        self.ex.start(200, self._headers(headers), None, self._body(first))

    def write(self, chunk: bytes) -> None:
        # One message (or several, or part of one) as it came: never held for the next.
        self.ex.write(self._body(chunk) if self._grpc else chunk)

    def write_paused(self) -> bool:
        return self.ex.write_paused()

    async def drain(self) -> None:
        await self.ex.drain()

    def finish(self, last: bytes = b"", trailers: Headers | None = None) -> None:
        if not self._grpc:
            self.ex.finish(last, trailers)
            return
        self.ex.finish(self._body(last + trailer_frame(trailers or _NO_STATUS)))
