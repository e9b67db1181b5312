"""What gRPC (a protocol on HTTP/2) means in HTTP terms, shared by the service kit's gRPC server
and client and the gateway's transcoding: which HTTP status each status code stands for (as
grpc-gateway and Google's APIs map them), the trailer of the rich error model, and the options
every channel to a service is opened with. Plain data: nothing here imports grpcio."""

from __future__ import annotations

from typing import Any

__all__ = ["CHANNEL_OPTIONS", "DETAILS_KEY", "HTTP_OF_GRPC_CODE", "http_status_of"]

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


# Reconnect to a restarted instance within seconds, not gRPC's default two minutes; keepalive
# pings find a dead connection that no call is using.
CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
