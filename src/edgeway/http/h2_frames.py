"""HTTP/2 frame layouts (RFC 9113 §4.1, §6) for the gateway's own upstream client.

The upstream connection (:mod:`edgeway.http.h2_upstream`) reads and writes frames itself rather
than through the ``h2`` library: on a proxied gRPC call ``h2``'s frame objects, flag sets and
state machines were most of the gateway's CPU, for a handful of frame kinds a client of a known
service sees. This module holds what both directions share: the frame types, flags, error and
settings codes, and the builders of every frame the client sends.
"""

from __future__ import annotations

import struct
from typing import Final

__all__ = [
    "CONNECTION_PREFACE",
    "FrameType",
    "data_frame",
    "frame",
    "goaway_frame",
    "headers_frames",
    "ping_frame",
    "rst_stream_frame",
    "settings_frame",
    "window_update_frame",
]

CONNECTION_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER: Final = 9
MAX_WINDOW: Final = (1 << 31) - 1
MAX_STREAM_ID: Final = (1 << 31) - 1
DEFAULT_WINDOW: Final = 65535
DEFAULT_FRAME_SIZE: Final = 16384
MAX_FRAME_SIZE_LIMIT: Final = (1 << 24) - 1


class FrameType:
    DATA: Final = 0x0
    HEADERS: Final = 0x1
    PRIORITY: Final = 0x2
    RST_STREAM: Final = 0x3
    SETTINGS: Final = 0x4
    PUSH_PROMISE: Final = 0x5
    PING: Final = 0x6
    GOAWAY: Final = 0x7
    WINDOW_UPDATE: Final = 0x8
    CONTINUATION: Final = 0x9


# Flags (one bit may mean different things on different frame types).
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes (RFC 9113 §7).
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE: Final = 0x1
ENABLE_PUSH: Final = 0x2
MAX_CONCURRENT_STREAMS: Final = 0x3
INITIAL_WINDOW_SIZE: Final = 0x4
MAX_FRAME_SIZE: Final = 0x5
MAX_HEADER_LIST_SIZE: Final = 0x6

_HEADER: Final = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
_U32: Final = struct.Struct(">L")
_SETTING: Final = struct.Struct(">HL")
_GOAWAY: Final = struct.Struct(">LL")


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _HEADER.pack(size >> 8, size & 0xFF, kind, flags, stream_id) + payload


def data_frame(stream_id: int, data: bytes, end_stream: bool) -> bytes:
    return frame(FrameType.DATA, END_STREAM if end_stream else 0, stream_id, data)


def headers_frames(stream_id: int, block: bytes, end_stream: bool, max_frame: int) -> list[bytes]:
    """A header block as HEADERS, then CONTINUATION frames when it exceeds ``max_frame``."""
    flags = END_STREAM if end_stream else 0
    if len(block) <= max_frame:
        return [frame(FrameType.HEADERS, flags | END_HEADERS, stream_id, block)]
    chunks = [block[i : i + max_frame] for i in range(0, len(block), max_frame)]
    out = [frame(FrameType.HEADERS, flags, stream_id, chunks[0])]
    for chunk in chunks[1:-1]:
        out.append(frame(FrameType.CONTINUATION, 0, stream_id, chunk))
    out.append(frame(FrameType.CONTINUATION, END_HEADERS, stream_id, chunks[-1]))
    return out


def settings_frame(settings: dict[int, int], ack: bool = False) -> bytes:
    payload = b"".join(_SETTING.pack(code, value) for code, value in settings.items())
    return frame(FrameType.SETTINGS, ACK if ack else 0, 0, payload)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return frame(FrameType.WINDOW_UPDATE, 0, stream_id, _U32.pack(increment))


def rst_stream_frame(stream_id: int, code: int) -> bytes:
    return frame(FrameType.RST_STREAM, 0, stream_id, _U32.pack(code))


def goaway_frame(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    return frame(FrameType.GOAWAY, 0, 0, _GOAWAY.pack(last_stream_id, code) + debug)


def ping_frame(payload: bytes, ack: bool = False) -> bytes:
    return frame(FrameType.PING, ACK if ack else 0, 0, payload)


def parse_u32(data: bytes, offset: int = 0) -> int:
    value: int = _U32.unpack_from(data, offset)[0]
    return value


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    return [_SETTING.unpack_from(payload, i) for i in range(0, len(payload), 6)]


def parse_goaway(payload: bytes) -> tuple[int, int]:
    last, code = _GOAWAY.unpack_from(payload)
    return last & MAX_STREAM_ID, code
