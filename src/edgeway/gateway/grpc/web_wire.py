"""gRPC-Web's wire format (grpc/doc/PROTOCOL-WEB.md), as bytes in and bytes out.

A gRPC-Web body has gRPC's framing (a flag byte, a 4-byte big-endian length, the message); the
response ends with one more frame whose flag has the high bit set (0x80) and whose payload is
the trailers as HTTP/1-style header lines, since a browser cannot read HTTP trailers.
``application/grpc-web-text`` is the same bytes in base64, for clients that can only read text;
the response may be base64 in padded pieces (the spec lets a server flush a padded chunk
whenever it sends), which is what lets a stream go out message by message.

Plain bytes functions, no gateway imports: the error rule (:mod:`.status`) and the proxy's
translation (:mod:`.web`) both use them.
"""

from __future__ import annotations

import binascii
from typing import Final

__all__ = [
    "GRPC_WEB",
    "GRPC_WEB_TEXT",
    "TRAILER_FLAG",
    "GrpcWebFormatError",
    "check_frames",
    "decode_text",
    "encode_text",
    "is_grpc_web",
    "response_content_type",
    "text_response",
    "trailer_frame",
    "upstream_content_type",
]

GRPC_WEB: Final = b"application/grpc-web"
GRPC_WEB_TEXT: Final = b"application/grpc-web-text"
_GRPC: Final = b"application/grpc"
TRAILER_FLAG: Final = 0x80
_COMPRESSED: Final = 0x01


class GrpcWebFormatError(ValueError):
    """A gRPC-Web request body that is not base64 (``-text``) or not whole gRPC frames."""


def is_grpc_web(content_type: bytes | None) -> bool:
    """``application/grpc-web``, ``application/grpc-web+proto``, ``application/grpc-web-text``..."""
    return content_type is not None and content_type[:20].lower() == GRPC_WEB


def _is_text(value: bytes | None) -> bool:
    return value is not None and value[:25].lower() == GRPC_WEB_TEXT


def text_response(content_type: bytes | None, accept: bytes | None) -> bool:
    """Whether the answer is base64 text: the request was, or the client asks for it in
    ``Accept`` (the spec's way for a client that sends binary but reads text)."""
    return _is_text(content_type) or (accept is not None and GRPC_WEB_TEXT in accept.lower())


def response_content_type(upstream: bytes | None, text: bool, asked: bytes = _GRPC) -> bytes:
    """The client's content type for a service's ``application/grpc[+codec]``: the codec suffix
    kept (``application/grpc+proto`` -> ``application/grpc-web+proto``); when the service names
    none (grpcio answers a bare ``application/grpc``), the one of ``asked``, the gRPC type the
    request was sent upstream with (the client's codec)."""
    suffix = b""
    if upstream is not None and upstream[:16].lower() == _GRPC:
        suffix = upstream[16:]
    return (GRPC_WEB_TEXT if text else GRPC_WEB) + (suffix or asked[16:])


def upstream_content_type(content_type: bytes) -> bytes:
    """The ``application/grpc[+codec]`` a service gets for the client's gRPC-Web type."""
    rest = content_type[25:] if _is_text(content_type) else content_type[20:]
    return _GRPC + rest


def decode_text(data: bytes) -> bytes:
    """A ``-text`` body decoded: base64 that may be several padded pieces one after another (a
    client may send its body in padded chunks, as servers do); whitespace is not allowed."""
    out: list[bytes] = []
    start = 0
    end = len(data)
    try:
        while start < end:
            pad = data.find(b"=", start)
            # A piece ends at the end of the 4-character group its first "=" is in.
            stop = end if pad < 0 else start + ((pad - start) // 4 + 1) * 4
            piece = data[start:stop]
            if len(piece) % 4:
                raise GrpcWebFormatError(
                    f"the base64 body (application/grpc-web-text) has a piece of {len(piece)} "
                    "characters, not a multiple of 4"
                )
            out.append(binascii.a2b_base64(piece, strict_mode=True))
            start = stop
    except binascii.Error as exc:
        raise GrpcWebFormatError(f"the body is not valid base64 (application/grpc-web-text): {exc}") from None
    return b"".join(out)


def check_frames(data: bytes) -> None:
    """Raise :class:`GrpcWebFormatError` unless ``data`` is whole gRPC message frames: a frame
    cut short, a length past the end of the body or a trailer frame (only a server sends one)
    would reach the service as a call it cannot read, or one cut in the middle."""
    pos = 0
    end = len(data)
    index = 0
    while pos < end:
        if end - pos < 5:
            raise GrpcWebFormatError(
                f"frame {index} is cut short: {end - pos} byte(s) where a frame's 5-byte header starts"
            )
        flags = data[pos]
        if flags & ~_COMPRESSED:
            what = (
                "a trailer frame (only responses have one)" if flags & TRAILER_FLAG else f"flags {flags:#04x}"
            )
            raise GrpcWebFormatError(f"frame {index} has {what}")
        size = int.from_bytes(data[pos + 1 : pos + 5], "big")
        if size > end - pos - 5:
            raise GrpcWebFormatError(
                f"frame {index} says {size} bytes of message but the body has {end - pos - 5} left"
            )
        pos += 5 + size
        index += 1


def trailer_frame(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The trailers as the body's last frame: flag 0x80, length, ``name:value\\r\\n`` lines with
    lower-case names (as Envoy and the gRPC-Web clients write and read them)."""
    payload = b"".join([b"%b:%b\r\n" % (name.lower(), value) for name, value in trailers])
    return bytes((TRAILER_FLAG,)) + len(payload).to_bytes(4, "big") + payload


def encode_text(data: bytes) -> bytes:
    """``data`` as one padded base64 piece (empty for nothing)."""
    return binascii.b2a_base64(data, newline=False) if data else b""
