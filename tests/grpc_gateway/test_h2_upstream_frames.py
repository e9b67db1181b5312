"""The upstream HTTP/2 client's own frame layer (edgeway.http.h2_upstream) against a scripted raw
server: what a well-behaved server sends that grpcio never does (CONTINUATION, padding, 1xx,
PING, a smaller window), and what a broken or hostile one sends (malformed heads, frames past
the windows or the frame size, PUSH_PROMISE), each answered as RFC 9113 says."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hpack import Encoder

from edgeway.http import h2_frames as fr
from edgeway.http.h2_frames import FrameType
from edgeway.http.h2_upstream import H2Refused, H2Stream, H2UpstreamConnection, StreamReset

Fields = list[tuple[bytes, bytes]]
REQUEST: Fields = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":authority", b"svc"),
    (b":path", b"/pkg.Svc/Call"),
    (b"content-type", b"application/grpc"),
]


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes


@dataclass
class RawServer:
    """One accepted connection: the client's frames as they arrive, and a writer for ours."""

    frames: asyncio.Queue[Frame] = field(default_factory=asyncio.Queue)
    writer: asyncio.StreamWriter | None = None
    encoder: Encoder = field(default_factory=Encoder)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def send(self, *frames: bytes) -> None:
        assert self.writer is not None
        self.writer.write(b"".join(frames))

    def head(self, stream_id: int, fields: Fields, end_stream: bool = False) -> bytes:
        flags = fr.END_HEADERS | (fr.END_STREAM if end_stream else 0)
        return fr.frame(FrameType.HEADERS, flags, stream_id, self.encoder.encode(fields))

    async def next(self, kind: int) -> Frame:
        """The client's next frame of ``kind`` (others skipped)."""
        while True:
            got = await asyncio.wait_for(self.frames.get(), 5)
            if got.kind == kind:
                return got

    async def _read(self, reader: asyncio.StreamReader) -> None:
        assert await reader.readexactly(len(fr.CONNECTION_PREFACE)) == fr.CONNECTION_PREFACE
        try:
            while True:
                header = await reader.readexactly(9)
                size = int.from_bytes(header[:3], "big")
                payload = await reader.readexactly(size)
                stream_id = struct.unpack(">L", header[5:9])[0]
                await self.frames.put(Frame(header[3], header[4], stream_id, payload))
        except asyncio.IncompleteReadError:
            self.closed.set()


@contextlib.asynccontextmanager
async def connected(
    settings: dict[int, int] | None = None,
) -> AsyncIterator[tuple[RawServer, H2UpstreamConnection]]:
    """A client connection to a raw server that has sent its SETTINGS (``settings``)."""
    accepted: asyncio.Future[RawServer] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = RawServer(writer=writer)
        accepted.set_result(raw)
        await raw._read(reader)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: H2UpstreamConnection("raw", loop), "127.0.0.1", port)
    raw = await accepted
    raw.send(fr.settings_frame(settings or {}))
    await asyncio.wait_for(conn.settled, 5)
    try:
        yield raw, conn
    finally:
        conn.close()
        assert raw.writer is not None
        raw.writer.close()
        server.close()


async def body_of(stream: H2Stream) -> bytes:
    chunks = []
    while chunk := await stream.read():
        chunks.append(chunk)
    return b"".join(chunks)


async def test_settings_are_acknowledged_and_the_client_sends_its_own_first() -> None:
    async with connected() as (raw, _conn):
        first = await raw.frames.get()
        assert first.kind == FrameType.SETTINGS
        assert not first.flags & fr.ACK
        settings = dict(fr.parse_settings(first.payload))
        assert settings[fr.ENABLE_PUSH] == 0
        ack = await raw.next(FrameType.SETTINGS)
        assert ack.flags & fr.ACK
        assert ack.payload == b""


async def test_a_head_in_continuations_padded_data_and_trailers_make_one_answer() -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        sent = await raw.next(FrameType.HEADERS)
        assert sent.flags & fr.END_STREAM
        assert sent.stream_id == stream.stream_id
        block = raw.encoder.encode([(b":status", b"200"), (b"x-long", b"v" * 100)])
        padded = bytes((7,)) + b"hello" + b"\0" * 7
        raw.send(
            fr.frame(FrameType.HEADERS, 0, 1, block[:10]),
            fr.frame(FrameType.CONTINUATION, 0, 1, block[10:50]),
            fr.frame(FrameType.CONTINUATION, fr.END_HEADERS, 1, block[50:]),
            fr.frame(FrameType.DATA, fr.PADDED, 1, padded),
            raw.head(1, [(b"grpc-status", b"0")], end_stream=True),
        )
        head = await stream.response()
        assert dict(head) == {b":status": b"200", b"x-long": b"v" * 100}
        assert await body_of(stream) == b"hello"
        assert stream.trailers == [(b"grpc-status", b"0")]
        assert conn.open_streams == 0


async def test_an_informational_head_is_skipped_for_the_final_one() -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        raw.send(raw.head(1, [(b":status", b"100")]), raw.head(1, [(b":status", b"204")], end_stream=True))
        assert dict(await stream.response())[b":status"] == b"204"
        assert await body_of(stream) == b""


@pytest.mark.parametrize(
    "fields",
    [
        [(b":status", b"200"), (b"Upper", b"x")],
        [(b":status", b"200"), (b"connection", b"close")],
        [(b"x-first", b"a"), (b":status", b"200")],
        [(b":status", b"200"), (b":path", b"/")],
        [(b"x-no-status", b"a")],
        [(b":status", b"2000")],
        [(b":status", b"099")],
        [(b":status", b"600")],
        [(b":status", b"200"), (b"x-split", b"a\r\nset-cookie: evil")],
        [(b":status", b"200"), (b"x-nul", b"a\x00b")],
        [(b":status", b"200"), (b"x-space", b" padded")],
        [(b":status", b"200"), (b"bad name", b"x")],
    ],
)
async def test_a_malformed_head_resets_its_stream_only(fields: Fields) -> None:
    async with connected() as (raw, conn):
        bad = conn.open_stream(REQUEST, end_stream=True)
        good = conn.open_stream(REQUEST, end_stream=True)
        raw.send(raw.head(bad.stream_id, fields))
        with pytest.raises(StreamReset, match="malformed"):
            await bad.response()
        rst = await raw.next(FrameType.RST_STREAM)
        assert rst.stream_id == bad.stream_id
        assert fr.parse_u32(rst.payload) == fr.PROTOCOL_ERROR
        raw.send(raw.head(good.stream_id, [(b":status", b"200")], end_stream=True))
        assert dict(await good.response())[b":status"] == b"200"


async def test_trailers_with_a_pseudo_header_reset_the_stream() -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        raw.send(raw.head(1, [(b":status", b"200")]), raw.head(1, [(b":status", b"200")], end_stream=True))
        await stream.response()
        with pytest.raises(StreamReset, match="malformed trailers"):
            await body_of(stream)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (fr.frame(FrameType.PUSH_PROMISE, fr.END_HEADERS, 1, b"\0\0\0\x02"), fr.PROTOCOL_ERROR),
        (fr.frame(FrameType.DATA, 0, 1, b"x" * (fr.DEFAULT_FRAME_SIZE + 1)), fr.FRAME_SIZE_ERROR),
        (fr.frame(FrameType.DATA, 0, 3, b"x"), fr.PROTOCOL_ERROR),  # a stream never opened
        (fr.frame(FrameType.CONTINUATION, fr.END_HEADERS, 1, b"\x88"), fr.PROTOCOL_ERROR),
        (fr.window_update_frame(0, fr.MAX_WINDOW), fr.FLOW_CONTROL_ERROR),
        (fr.frame(FrameType.HEADERS, fr.END_HEADERS, 1, b"\xff\xff\xff\xff"), fr.COMPRESSION_ERROR),
    ],
)
async def test_a_frame_a_server_must_not_send_ends_the_connection(frame: bytes, code: int) -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        raw.send(frame)
        with pytest.raises(StreamReset):
            await stream.response()
        goaway = await raw.next(FrameType.GOAWAY)
        assert fr.parse_goaway(goaway.payload)[1] == code
        await asyncio.wait_for(raw.closed.wait(), 5)
        assert conn.closed.done()
        assert not conn.available


async def test_data_past_the_stream_window_is_a_flow_control_error() -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        raw.send(raw.head(1, [(b":status", b"200")]))
        await stream.response()
        # 1 MiB is the stream's window: 65 frames of 16 KiB go past it, unread.
        raw.send(*(fr.data_frame(1, b"x" * fr.DEFAULT_FRAME_SIZE, False) for _ in range(65)))
        goaway = await raw.next(FrameType.GOAWAY)
        assert fr.parse_goaway(goaway.payload)[1] == fr.FLOW_CONTROL_ERROR
        with pytest.raises(StreamReset):
            await body_of(stream)


async def test_a_body_waits_for_a_small_window_and_goes_on_with_each_update() -> None:
    async with connected({fr.INITIAL_WINDOW_SIZE: 10}) as (raw, conn):
        stream = conn.open_stream(REQUEST)
        sending = asyncio.ensure_future(stream.send(b"a" * 25, end_stream=True))
        first = await raw.next(FrameType.DATA)
        assert first.payload == b"a" * 10
        assert not first.flags & fr.END_STREAM
        await asyncio.sleep(0.05)
        assert not sending.done()  # the window is shut
        raw.send(fr.window_update_frame(1, 10))
        assert (await raw.next(FrameType.DATA)).payload == b"a" * 10
        raw.send(fr.window_update_frame(1, 100))
        last = await raw.next(FrameType.DATA)
        assert last.payload == b"a" * 5
        assert last.flags & fr.END_STREAM
        await asyncio.wait_for(sending, 5)


async def test_read_data_is_handed_back_in_window_updates() -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        raw.send(raw.head(1, [(b":status", b"200")]))
        await stream.response()
        chunk = b"x" * fr.DEFAULT_FRAME_SIZE
        raw.send(*(fr.data_frame(1, chunk, False) for _ in range(40)))  # 640 KiB: past half a window
        for _ in range(40):
            assert await stream.read() == chunk
        update = await raw.next(FrameType.WINDOW_UPDATE)
        while update.stream_id != 1:
            update = await raw.next(FrameType.WINDOW_UPDATE)
        assert fr.parse_u32(update.payload) >= 1 << 19


async def test_pings_are_answered_and_ours_resolve_on_their_ack() -> None:
    async with connected() as (raw, conn):
        raw.send(fr.ping_frame(b"12345678"))
        ack = await raw.next(FrameType.PING)
        assert ack.flags & fr.ACK
        assert ack.payload == b"12345678"
        waiter = conn.ping(b"abcdefgh")
        ours = await raw.next(FrameType.PING)
        assert not ours.flags & fr.ACK
        assert ours.payload == b"abcdefgh"
        assert not waiter.done()
        raw.send(fr.ping_frame(b"abcdefgh", ack=True))
        await asyncio.wait_for(waiter, 5)


async def test_refused_and_reset_streams_fail_with_their_kind() -> None:
    async with connected() as (raw, conn):
        refused = conn.open_stream(REQUEST, end_stream=True)
        reset = conn.open_stream(REQUEST, end_stream=True)
        raw.send(fr.rst_stream_frame(refused.stream_id, fr.REFUSED_STREAM))
        raw.send(fr.rst_stream_frame(reset.stream_id, fr.INTERNAL_ERROR))
        with pytest.raises(H2Refused):
            await refused.response()
        with pytest.raises(StreamReset) as caught:
            await reset.response()
        assert caught.value.code == fr.INTERNAL_ERROR
        assert not isinstance(caught.value, H2Refused)
        # Late frames of a reset stream are dropped, not a connection error.
        raw.send(
            raw.head(reset.stream_id, [(b":status", b"200")]), fr.data_frame(reset.stream_id, b"x", True)
        )
        raw.send(fr.ping_frame(b"stillok!"))
        assert (await raw.next(FrameType.PING)).payload == b"stillok!"
        assert conn.available


async def test_the_concurrent_stream_limit_and_a_goaway_close_the_connection_to_new_streams() -> None:
    async with connected({fr.MAX_CONCURRENT_STREAMS: 1}) as (raw, conn):
        first = conn.open_stream(REQUEST, end_stream=True)
        assert not conn.available
        with pytest.raises(H2Refused):
            conn.open_stream(REQUEST)
        raw.send(fr.goaway_frame(1, fr.NO_ERROR))
        raw.send(raw.head(1, [(b":status", b"200"), (b"grpc-status", b"0")], end_stream=True))
        assert dict(await first.response())[b":status"] == b"200"
        await asyncio.wait_for(raw.closed.wait(), 5)  # closed once its last stream ended


async def test_a_first_frame_other_than_settings_is_a_protocol_error() -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(fr.ping_frame(b"12345678"))
        with contextlib.suppress(ConnectionError):
            got.set_result(await reader.read())  # all the client sent, until it closed
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, conn = await loop.create_connection(lambda: H2UpstreamConnection("raw", loop), "127.0.0.1", port)
    with pytest.raises(StreamReset, match="first frame"):
        await asyncio.wait_for(conn.settled, 5)
    assert conn.closed.done()
    sent = await asyncio.wait_for(got, 5)
    assert sent.endswith(fr.goaway_frame(0, fr.PROTOCOL_ERROR, b"the server's first frame was not SETTINGS"))
    server.close()


async def test_data_dropped_for_a_reset_stream_still_frees_the_connections_window() -> None:
    async with connected() as (raw, conn):
        stream = conn.open_stream(REQUEST, end_stream=True)
        raw.send(raw.head(1, [(b":status", b"200")]))
        await stream.response()
        stream.reset()
        assert fr.parse_u32((await raw.next(FrameType.RST_STREAM)).payload) == fr.CANCEL
        # In flight before the reset arrived: 9 MiB, past half the connection's 16 MiB window.
        chunk = fr.data_frame(1, b"x" * fr.DEFAULT_FRAME_SIZE, False)
        for _ in range(9 * 64):
            raw.send(chunk)
        update = await raw.next(FrameType.WINDOW_UPDATE)
        while update.stream_id != 0:
            update = await raw.next(FrameType.WINDOW_UPDATE)
        assert fr.parse_u32(update.payload) >= 8 << 20
        assert conn.available


async def test_a_body_still_sending_when_its_answered_stream_is_reset_stops() -> None:
    async with connected({fr.INITIAL_WINDOW_SIZE: 0}) as (raw, conn):
        stream = conn.open_stream(REQUEST)
        sending = asyncio.ensure_future(stream.send(b"body", end_stream=True))
        raw.send(raw.head(1, [(b":status", b"200"), (b"grpc-status", b"0")], end_stream=True))
        assert dict(await stream.response())[b":status"] == b"200"
        await asyncio.sleep(0.01)
        assert not sending.done()  # no window for the body
        stream.reset()
        rst = await raw.next(FrameType.RST_STREAM)
        assert rst.stream_id == 1
        with pytest.raises(StreamReset):
            await asyncio.wait_for(sending, 5)
