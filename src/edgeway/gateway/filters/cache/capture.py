"""A copy of the response the route's action writes, up to a size (an Exchange :class:`ResponseTap`).

The action streams to the client as usual; the capture only keeps references to the chunks.
Once more than ``limit`` body bytes went by (or a ``Content-Length`` above it was announced) it
drops what it holds and only counts, so a large streamed response passes through uncached
without being buffered.
"""

from __future__ import annotations

from edgeway.http.exchange import Headers


class Capture:
    __slots__ = ("_parts", "_size", "aborted", "complete", "headers", "limit", "overflow", "status")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.status = 0
        self.headers: Headers = []
        self.complete = False
        self.aborted = False
        self.overflow = False
        self._parts: list[bytes] = []
        self._size = 0

    # -- ResponseTap --------------------------------------------------------------------------
    def head(self, status: int, headers: Headers, content_length: int | None) -> None:
        self.status = status
        self.headers = headers
        if content_length is not None and content_length > self.limit:
            self.overflow = True

    def body(self, chunk: bytes) -> None:
        if self.overflow or not chunk:
            return
        self._size += len(chunk)
        if self._size > self.limit:
            self.overflow = True
            self._parts = []
        else:
            self._parts.append(chunk)

    def end(self) -> None:
        self.complete = True

    def abort(self) -> None:
        self.aborted = True

    # -- result ----------------------------------------------------------------------------------
    @property
    def usable(self) -> bool:
        """A whole response that fits: what the cache may consider storing."""
        return self.complete and not self.aborted and not self.overflow

    def body_bytes(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)
