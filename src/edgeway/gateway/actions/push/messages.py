"""A pushed message and its wire forms.

A message is encoded once, whatever the number of clients it goes to: the WebSocket frame and the
SSE event are built on first use and kept on the message, so fanning one message out to ten
thousand sockets costs ten thousand writes of the same bytes, not ten thousand encodings.
Server-to-client WebSocket frames are unmasked (RFC 6455 §5.1), so the frame is a header plus
the payload and can be shared.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

_NOT_DECODED = object()


class PushMessage:
    """One message on one topic. ``data`` is JSON text (a source's payload, kept as it came)."""

    __slots__ = ("_payload", "_sse", "_ws", "data", "event", "id", "seq", "time", "topic")

    def __init__(
        self, id: str, topic: str, event: str, data: bytes, time: float, payload: Any = _NOT_DECODED
    ) -> None:
        self.id = id
        self.topic = topic
        self.event = event
        self.data = data
        self.time = time
        self.seq = 0  # the hub's arrival order, set when published
        self._payload: Any = payload  # the decoded data when the publisher had it
        self._ws: bytes | None = None
        self._sse: bytes | None = None

    def __repr__(self) -> str:
        return f"<PushMessage {self.topic} {self.event} {self.id}>"

    @property
    def payload(self) -> Any:
        """``data`` decoded (once), for authorisers that look inside; None if it is not JSON."""
        if self._payload is _NOT_DECODED:
            try:
                self._payload = orjson.loads(self.data)
            except orjson.JSONDecodeError:
                self._payload = None
        return self._payload

    def field(self, path: tuple[str, ...]) -> Any:
        """A dotted field of the payload, or None."""
        value = self.payload
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def websocket_frame(self) -> bytes:
        if self._ws is None:
            body = (
                b'{"type":"message","topic":'
                + orjson.dumps(self.topic)
                + b',"id":'
                + orjson.dumps(self.id)
                + b',"event":'
                + orjson.dumps(self.event)
                + b',"data":'
                + self.data
                + b"}"
            )
            self._ws = text_frame(body)
        return self._ws

    def sse_event(self) -> bytes:
        if self._sse is None:
            lines = [b"id: " + self.id.encode(), b"event: " + self.event.encode()]
            # a JSON text may span lines; each line of an SSE field needs its own "data:" prefix
            lines.extend(b"data: " + line for line in self.data.splitlines() or [b""])
            self._sse = b"\n".join(lines) + b"\n\n"
        return self._sse


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final WebSocket text frame (RFC 6455 §5.2) around UTF-8 ``payload``."""
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def control_frame(kind: str, **fields: Any) -> bytes:
    """A WebSocket text frame of a protocol message (``subscribed``, ``error``...)."""
    return text_frame(orjson.dumps({"type": kind, **fields}))
