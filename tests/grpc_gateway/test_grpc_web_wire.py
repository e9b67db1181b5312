"""gRPC-Web's wire format on its own: base64 in padded pieces, frame checks, content types."""

from __future__ import annotations

import base64

import pytest

from edgeway.gateway.grpc.web_wire import (
    GrpcWebFormatError,
    check_frames,
    decode_text,
    response_content_type,
    text_response,
    trailer_frame,
    upstream_content_type,
)


def test_base64_in_padded_pieces_decodes_whole() -> None:
    pieces = [b"a", b"bc", b"def", b"", b"ghij"]
    assert decode_text(b"".join(base64.b64encode(p) for p in pieces)) == b"abcdefghij"
    assert decode_text(b"") == b""


@pytest.mark.parametrize(
    "text",
    [b"YQ", b"YQ=", b"Y===", b"YQ==\n", b"YQ== ", b"Y!==", b"YQ==YQ", b"=YQ="],
)
def test_what_is_not_base64_is_refused(text: bytes) -> None:
    with pytest.raises(GrpcWebFormatError, match="base64"):
        decode_text(text)


def test_whole_frames_pass_and_a_compressed_one_too() -> None:
    check_frames(b"")
    check_frames(b"\0\0\0\0\0" + b"\1\0\0\0\2hi" + b"\0\0\0\0\1x")


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"\0\0\0", "frame 0 is cut short"),
        (b"\0\0\0\0\0" + b"\0\0\0\0\5abc", "frame 1 says 5 bytes"),
        (b"\x80\0\0\0\0", "trailer frame"),
        (b"\x02\0\0\0\0", "flags 0x02"),
    ],
)
def test_broken_frames_are_named(body: bytes, said: str) -> None:
    with pytest.raises(GrpcWebFormatError, match=said):
        check_frames(body)


def test_content_types() -> None:
    assert upstream_content_type(b"application/grpc-web") == b"application/grpc"
    assert upstream_content_type(b"application/grpc-web+proto") == b"application/grpc+proto"
    assert upstream_content_type(b"application/grpc-web-text+proto") == b"application/grpc+proto"
    assert response_content_type(b"application/grpc+json", False) == b"application/grpc-web+json"
    assert response_content_type(b"application/grpc", True, b"application/grpc+proto") == (
        b"application/grpc-web-text+proto"
    )
    assert text_response(b"application/grpc-web-text", None)
    assert text_response(b"application/grpc-web", b"application/grpc-web-text")
    assert not text_response(b"application/grpc-web", b"*/*")


def test_trailer_frame() -> None:
    frame = trailer_frame([(b"Grpc-Status", b"0"), (b"grpc-message", b"ok")])
    payload = b"grpc-status:0\r\ngrpc-message:ok\r\n"
    assert frame == b"\x80" + len(payload).to_bytes(4, "big") + payload
