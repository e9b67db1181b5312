"""What gRPC (a protocol on HTTP/2) means in HTTP terms, shared by the service kit's gRPC server
and client and the gateway's transcoding: which HTTP status each status code stands for (as
grpc-gateway and Google's APIs map them), the trailer of the rich error model, and the options
every channel to a service is opened with. Plain data: nothing here imports grpcio."""

from __future__ import annotations

from typing import Any

__all__ = [
    "CHANNEL_OPTIONS",
    "DETAILS_KEY",
    "GRPC_CODE_OF_HTTP",
    "HTTP_OF_GRPC_CODE",
    "encode_grpc_message",
    "grpc_code_of_http",
    "http_status_of",
    "is_grpc_content_type",
    "refusal_trailers",
]

# The trailer carrying a google.rpc.Status with details (ErrorInfo, BadRequest, RetryInfo...).
DETAILS_KEY = "grpc-status-details-bin"

# Status code number -> HTTP status (google/rpc/code.proto's comments).
HTTP_OF_GRPC_CODE: dict[int, int] = {
    0: 200,  # OK
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}


def http_status_of(code: int) -> int:
    """The HTTP status the status code numbered ``code`` stands for (500 when unknown)."""
    return HTTP_OF_GRPC_CODE.get(code, 500)


# The other way: the status code of an answer the gateway (or its engine) makes with an HTTP
# status, for a gRPC client, which cannot read an HTTP error page.
GRPC_CODE_OF_HTTP: dict[int, int] = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 12,  # UNIMPLEMENTED: no route, the method is not served here
    405: 12,  # UNIMPLEMENTED
    408: 4,  # DEADLINE_EXCEEDED
    413: 8,  # RESOURCE_EXHAUSTED
    414: 8,
    415: 3,
    422: 3,
    429: 8,
    431: 8,
    499: 1,  # CANCELLED
    500: 13,  # INTERNAL
    501: 12,
    502: 14,  # UNAVAILABLE
    503: 14,
    504: 4,
}


def grpc_code_of_http(http_status: int) -> int:
    """The status code of an answer made with ``http_status`` (FAILED_PRECONDITION for another
    4xx, UNKNOWN or INTERNAL for the rest)."""
    known = GRPC_CODE_OF_HTTP.get(http_status)
    if known is not None:
        return known
    if 400 <= http_status < 500:
        return 9  # FAILED_PRECONDITION
    return 2 if http_status < 500 else 13  # UNKNOWN, INTERNAL


def is_grpc_content_type(content_type: bytes | None) -> bool:
    """A gRPC request (``application/grpc``, ``application/grpc+proto``, ``application/grpc-web``…)."""
    return content_type is not None and content_type[:16].lower() == b"application/grpc"


# grpc-message is percent-encoded UTF-8: everything outside printable ASCII, and '%' itself.
_PLAIN = frozenset(range(0x20, 0x7F)) - {ord("%")}


def encode_grpc_message(message: str) -> bytes:
    """``message`` as a ``grpc-message`` value (gRPC over HTTP/2, "Responses")."""
    out = bytearray()
    for byte in message.encode("utf-8"):
        if byte in _PLAIN:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


def refusal_trailers(http_status: int, reason: str, content_type: bytes) -> list[tuple[bytes, bytes]]:
    """The fields after ``:status: 200`` of a trailers-only answer to a gRPC request the engine
    refuses (a declared body over the limit, a head too large): gRPC and gRPC-Web clients read
    the status there, where a problem body would reach them as an unreadable HTTP error."""
    return [
        (b"content-type", content_type),
        (b"grpc-status", b"%d" % grpc_code_of_http(http_status)),
        (b"grpc-message", encode_grpc_message(reason)),
    ]


# Reconnect to a restarted instance within seconds, not gRPC's default two minutes; keepalive
# pings find a dead connection that no call is using.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
