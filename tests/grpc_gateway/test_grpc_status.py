"""The gRPC statuses and grpc-timeout values the gateway reads and writes."""

from __future__ import annotations

import grpc
import pytest

from edgeway.gateway.grpc.deadline import GrpcTimeoutError, format_timeout, parse_timeout
from edgeway.gateway.grpc.status import (
    GrpcStatus,
    encode_message,
    grpc_status_for,
    http_status_of,
    is_grpc,
    trailers_only,
)


@pytest.mark.parametrize(
    ("http", "expected"),
    [
        (401, GrpcStatus.UNAUTHENTICATED),
        (403, GrpcStatus.PERMISSION_DENIED),
        (404, GrpcStatus.UNIMPLEMENTED),
        (429, GrpcStatus.RESOURCE_EXHAUSTED),
        (502, GrpcStatus.UNAVAILABLE),
        (503, GrpcStatus.UNAVAILABLE),
        (504, GrpcStatus.DEADLINE_EXCEEDED),
        (500, GrpcStatus.INTERNAL),
        (418, GrpcStatus.FAILED_PRECONDITION),
        (599, GrpcStatus.INTERNAL),
    ],
)
def test_gateway_statuses_map_to_grpc_codes(http: int, expected: GrpcStatus) -> None:
    assert grpc_status_for(http) is expected


def test_codes_are_grpcios() -> None:
    for status in GrpcStatus:
        assert grpc.StatusCode[status.name].value[0] == status.value


def test_grpc_content_types_are_recognised() -> None:
    assert is_grpc(b"application/grpc")
    assert is_grpc(b"application/grpc+proto")
    assert is_grpc(b"Application/GRPC-web+proto")
    assert not is_grpc(b"application/json")
    assert not is_grpc(b"application/gr")
    assert not is_grpc(None)


def test_message_is_percent_encoded_utf8() -> None:
    assert encode_message("no route") == b"no route"
    assert encode_message("100% sure") == b"100%25 sure"
    assert encode_message("caf\u00e9\n") == b"caf%C3%A9%0A"


def test_trailers_only_headers() -> None:
    assert trailers_only(GrpcStatus.UNAUTHENTICATED, "missing token") == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"16"),
        (b"grpc-message", b"missing token"),
    ]
    assert trailers_only(GrpcStatus.OK, "") == [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"0"),
    ]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"1H", 3600.0),
        (b"2M", 120.0),
        (b"3S", 3.0),
        (b"250m", 0.25),
        (b"1500u", 0.0015),
        (b"99999999n", 0.099999999),
        (b" 7S ", 7.0),
    ],
)
def test_grpc_timeout_parses(value: bytes, seconds: float) -> None:
    assert parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"10s", b"123456789m", b"-1S", b"1.5S", b"1 S"])
def test_malformed_grpc_timeout_is_refused(value: bytes) -> None:
    with pytest.raises(GrpcTimeoutError, match="1 to 8 digits"):
        parse_timeout(value)


@pytest.mark.parametrize(
    ("seconds", "value"),
    [
        (0.25, b"250000u"),
        (0.0, b"1u"),
        (-3.0, b"1u"),
        (99.0, b"99000000u"),
        (100.0, b"100000m"),
        (200_000.0, b"200000S"),
        (1e9, b"16666666M"),
    ],
)
def test_grpc_timeout_formats_in_the_finest_unit_that_fits(seconds: float, value: bytes) -> None:
    assert format_timeout(seconds) == value
    assert parse_timeout(value) <= max(seconds, 1e-6)


@pytest.mark.parametrize(
    ("value", "http"),
    [
        (b"0", 200),
        (b"14", 503),
        (b"4", 504),
        (b"13", 500),
        (b"8", 429),
        (b"16", 401),
        (b"99", 500),
        (None, 500),
    ],
)
def test_a_services_grpc_status_is_judged_as_its_http_equivalent(value: bytes | None, http: int) -> None:
    assert http_status_of(value) == http
