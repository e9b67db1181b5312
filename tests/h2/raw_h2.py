"""Attack tooling for HTTP/2 tests: a client that sends what a well-behaved one never would, and
a service that records every byte the gateway writes to it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Final, cast

from h2_client import H2Client, hang_up
from hpack import Decoder, Encoder
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame

Fields = list[tuple[bytes, bytes]]
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def raw_client(port: int) -> H2Client:
    """An :class:`H2Client` whose own checks of what it sends are off: header lists with
    upper-case names, CR/LF, pseudo-headers anywhere go out as given."""
    client = await H2Client.connect(port)
    client.conn.config.validate_outbound_headers = False
    client.conn.config.normalize_outbound_headers = False
    return client


class RecordingService:
    """An HTTP/1.1 service answering ``200 ok`` to every request head it reads; ``received``
    holds every byte of every connection the gateway opened to it, in arrival order."""

    def __init__(self) -> None:
        self.received = b""
        self.port = 0
        self.connections = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def serving(cls) -> AsyncIterator[RecordingService]:
        svc = cls()
        server = await asyncio.start_server(svc._handle, "127.0.0.1", 0)
        svc.port = int(server.sockets[0].getsockname()[1])
        try:
            yield svc
        finally:
            server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                data = await r.read(65536)
                if not data:
                    break
                self.received += data
                # One answer per request head; good enough for requests without a body or
                # with one that arrived with its head.
                for _ in range(data.count(b"\r\n\r\n")):
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()


class RawH2:
    """A client that writes frames as given, with no state machine of its own (stream IDs,
    windows and frame order are the test's), and parses every frame the server sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.frames: list[Frame] = []
        self.header_lists: list[tuple[int, Fields]] = []  # each HEADERS frame's, decoded
        self.closed = False
        self._arrived = asyncio.Event()
        self._buffer = b""
        writer.write(PREFACE + SettingsFrame(0).serialize())
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w)

    def headers(
        self, stream_id: int, fields: Fields, *, end_stream: bool = True, end_headers: bool = True
    ) -> bytes:
        """A HEADERS frame's bytes (encoded now: send them in the order they were made)."""
        frame = HeadersFrame(stream_id)
        frame.data = self.encoder.encode(fields)
        if end_stream:
            frame.flags.add("END_STREAM")
        if end_headers:
            frame.flags.add("END_HEADERS")
        return bytes(frame.serialize())

    def send(self, *frames: bytes | Frame) -> None:
        self.writer.write(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                self._buffer += data
                while len(self._buffer) >= 9:
                    frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
                    if len(self._buffer) < 9 + length:
                        break
                    frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
                    self._buffer = self._buffer[9 + length :]
                    if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                        self.writer.write(SettingsFrame(0, flags=["ACK"]).serialize())
                    if isinstance(frame, HeadersFrame):
                        fields = cast(Fields, self.decoder.decode(frame.data, raw=True))
                        self.header_lists.append((frame.stream_id, fields))
                    self.frames.append(frame)
                self._arrived.set()
        except ConnectionError:
            pass
        finally:
            self.closed = True
            self._arrived.set()

    async def until(self, done: Callable[[RawH2], bool], timeout: float = 5.0) -> None:
        """Wait until ``done(self)`` holds (or the connection closed)."""
        async with asyncio.timeout(timeout):
            while not done(self) and not self.closed:
                self._arrived.clear()
                await self._arrived.wait()

    def stream_frames(self, stream_id: int) -> list[Frame]:
        return [f for f in self.frames if f.stream_id == stream_id]

    def ended(self, stream_id: int) -> bool:
        return any(
            isinstance(f, RstStreamFrame) or "END_STREAM" in f.flags for f in self.stream_frames(stream_id)
        )

    def status(self, stream_id: int) -> int | None:
        for sid, fields in self.header_lists:
            if sid == stream_id:
                return int(dict(fields)[b":status"])
        return None

    def reset_code(self, stream_id: int) -> int | None:
        codes = [f.error_code for f in self.stream_frames(stream_id) if isinstance(f, RstStreamFrame)]
        return codes[0] if codes else None

    def goaway(self) -> GoAwayFrame | None:
        return next((f for f in self.frames if isinstance(f, GoAwayFrame)), None)

    async def close(self) -> None:
        await hang_up(self.writer, self._task)
