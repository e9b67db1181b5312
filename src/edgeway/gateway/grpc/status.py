"""gRPC statuses for what the gateway answers itself.

A gRPC client reads the outcome of a call from ``grpc-status`` and ``grpc-message``, not from
the HTTP status: an HTTP 401 problem page is, to it, "UNAVAILABLE: unexpected HTTP status"
with the reason lost. So when the request is gRPC (``content-type: application/grpc…``),
the gateway answers its own refusals — no route, authentication, permissions, rate limits,
no instance, deadlines — as a *trailers-only* response (gRPC over HTTP/2, "Responses"):
HTTP 200, ``content-type: application/grpc``, and the status in the only headers sent.

The mapping from the gateway's HTTP statuses follows what each status means to the caller;
for a rate limit RESOURCE_EXHAUSTED (what gRPC servers and Envoy's local rate limit answer),
for the gateway's own deadline DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import enum
from typing import Final

from edgeway.gateway.grpc.web_wire import (
    encode_text,
    is_grpc_web,
    response_content_type,
    text_response,
    trailer_frame,
    upstream_content_type,
)
from edgeway.http.exchange import Exchange, Headers
from edgeway.http.grpc_wire import encode_grpc_message as encode_message
from edgeway.http.grpc_wire import grpc_code_of_http
from edgeway.http.grpc_wire import is_grpc_content_type as is_grpc

__all__ = [
    "GrpcStatus",
    "encode_message",
    "grpc_status_for",
    "http_status_of",
    "is_grpc",
    "respond_status",
    "trailers_only",
]

GRPC_CONTENT_TYPE: Final = b"application/grpc"


class GrpcStatus(enum.IntEnum):
    """The status codes of grpc/doc/statuscodes.md."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def grpc_status_for(http_status: int) -> GrpcStatus:
    """The gRPC status of an answer the gateway makes with ``http_status``."""
    return GrpcStatus(grpc_code_of_http(http_status))


# A service's gRPC status as the HTTP status that means the same (grpc-gateway's table): what
# the breakers, outlier ejection and metrics judge a gRPC call by, whose HTTP status is 200.
_HTTP_OF: Final = {
    GrpcStatus.OK: 200,
    GrpcStatus.CANCELLED: 499,
    GrpcStatus.UNKNOWN: 500,
    GrpcStatus.INVALID_ARGUMENT: 400,
    GrpcStatus.DEADLINE_EXCEEDED: 504,
    GrpcStatus.NOT_FOUND: 404,
    GrpcStatus.ALREADY_EXISTS: 409,
    GrpcStatus.PERMISSION_DENIED: 403,
    GrpcStatus.RESOURCE_EXHAUSTED: 429,
    GrpcStatus.FAILED_PRECONDITION: 400,
    GrpcStatus.ABORTED: 409,
    GrpcStatus.OUT_OF_RANGE: 400,
    GrpcStatus.UNIMPLEMENTED: 501,
    GrpcStatus.INTERNAL: 500,
    GrpcStatus.UNAVAILABLE: 503,
    GrpcStatus.DATA_LOSS: 500,
    GrpcStatus.UNAUTHENTICATED: 401,
}


def http_status_of(grpc_status: bytes | None) -> int:
    """The HTTP status equivalent to a ``grpc-status`` value (500 for one that is not a code)."""
    try:
        return _HTTP_OF[GrpcStatus(int(grpc_status or b""))]
    except ValueError:
        return 500


def trailers_only(
    status: GrpcStatus, message: str, content_type: bytes = GRPC_CONTENT_TYPE
) -> list[tuple[bytes, bytes]]:
    """The headers of a trailers-only response (sent with HTTP status 200 and no body)."""
    headers = [(b"content-type", content_type), (b"grpc-status", b"%d" % status)]
    if message:
        headers.append((b"grpc-message", encode_message(message)))
    return headers


def respond_status(ex: Exchange, http_status: int, message: str, headers: Headers) -> None:
    """Answer ``ex`` (a gRPC request) with the gRPC status of ``http_status`` as a trailers-only
    response; ``headers``: the gateway's own (request id, Retry-After, WWW-Authenticate...)."""
    content_type = ex.header(b"content-type") or GRPC_CONTENT_TYPE
    status = grpc_status_for(http_status)
    if is_grpc_web(content_type):
        _respond_web(ex, content_type, trailers_only(status, message)[1:], headers)
        return
    ex.respond(200, [*trailers_only(status, message, content_type), *headers])


def _respond_web(ex: Exchange, content_type: bytes, trailers: Headers, headers: Headers) -> None:
    """A gRPC-Web client's status: the body's trailer frame (what a browser reads, with no CORS
    exposure needed), and in the headers too, as a trailers-only answer (which clients also
    read), whatever the route: a gRPC-Web client cannot read gRPC's own form."""
    text = text_response(content_type, ex.header(b"accept"))
    frame = trailer_frame(trailers)
    reply_type = response_content_type(None, text, upstream_content_type(content_type))
    ex.respond(
        200, [(b"content-type", reply_type), *trailers, *headers], encode_text(frame) if text else frame
    )
