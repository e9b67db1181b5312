"""How a server-streaming answer is framed: each response message's JSON as one element.

Envoy's transcoder is the model. By default the answer is one JSON array written element by
element (``[`` with the first, ``,`` before each next one, ``]`` at the end), so a client that
reads the whole body gets an ordinary JSON document; ``stream_newline_delimited`` writes each
message on a line of its own (NDJSON); ``stream_sse_style_delimited`` as a Server-Sent Event
(``data: {...}`` and a blank line). orjson never writes a raw newline, so one message is always
one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Framing", "StreamFormat", "framing_of"]

StreamFormat = Literal["array", "ndjson", "sse"]


@dataclass(frozen=True, slots=True)
class Framing:
    content_type: bytes
    before_first: bytes  # what opens the stream, written with its first element
    before_next: bytes  # what separates an element from the one before
    after_each: bytes
    end: bytes  # what closes a stream that had elements
    empty: bytes  # the whole body of a stream without a message

    def first(self, element: bytes) -> bytes:
        return self.before_first + element + self.after_each

    def next(self, element: bytes) -> bytes:
        return self.before_next + element + self.after_each


_FRAMINGS: dict[StreamFormat, Framing] = {
    "array": Framing(b"application/json", b"[", b",", b"", b"]", b"[]"),
    "ndjson": Framing(b"application/x-ndjson", b"", b"", b"\n", b"", b""),
    "sse": Framing(b"text/event-stream", b"data: ", b"data: ", b"\n\n", b"", b""),
}


def framing_of(kind: StreamFormat) -> Framing:
    return _FRAMINGS[kind]
