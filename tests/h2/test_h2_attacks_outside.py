"""HTTP/2 attacked from outside: a gateway process (plaintext h2c) in front of a service that
records every byte it is sent, driven with hand-built header lists and frames.

A request the gateway must refuse reaches the service not at all: the header list is mapped onto
an HTTP/1.1 request, and what the mapping copies verbatim (the method, ``:path``) or implies (a
Content-Length) would otherwise write a second request, or a desynchronised one, to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import uvloop
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from h2_client import H2Client
from h2_gateway import gateway_config, serving
from hyperframe.frame import DataFrame, PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame
from raw_h2 import PREFACE, RawH2, RecordingService, raw_client

from edgeway.gateway.process.serve import GatewayServer
from edgeway.http.h2.connection import H2ServerProtocol

Fields = list[tuple[bytes, bytes]]


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """The loop a gateway process runs on (serve installs uvloop)."""
    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


@pytest.fixture
async def service() -> AsyncIterator[RecordingService]:
    async with RecordingService.serving() as svc:
        yield svc


@pytest.fixture
async def gateway(tmp_path: Path, service: RecordingService) -> AsyncIterator[GatewayServer]:
    async with serving(tmp_path, gateway_config(service.port)) as server:
        yield server


def request(
    path: bytes = b"/x", method: bytes = b"GET", scheme: bytes = b"http", extra: Fields | None = None
) -> Fields:
    pseudo = [(b":method", method), (b":scheme", scheme), (b":path", path), (b":authority", b"localhost")]
    return pseudo + (extra or [])


async def refused(gateway: GatewayServer, fields: Fields, *, end: bool = True) -> int | None:
    """Send one request; the RST_STREAM code it got, None if it was answered."""
    client = await raw_client(gateway.port)
    try:
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(stream_id, fields, end_stream=end)
        client.done[stream_id] = asyncio.get_running_loop().create_future()
        client.flush()
        reply = await client.response(stream_id, timeout=5)
    finally:
        await client.close()
    return reply.reset


SMUGGLING = {
    "CRLF in the query": request(b"/x?a=1 HTTP/1.1\r\nx-injected: 1\r\n\r\nGET /admin"),
    "CRLF in the method": request(method=b"GET /admin HTTP/1.1\r\nx-injected: 1\r\n\r\nGET"),
    "space in the method": request(method=b"GET /admin"),
    "space in the path": request(b"/x /admin"),
    "non-ASCII in the path": request(b"/x\xff"),
    "CRLF in the scheme": request(scheme=b"http\r\nx-injected: 1"),
    "control in a header value": request(extra=[(b"x-a", b"1\x0bx")]),
}


@pytest.mark.parametrize("fields", SMUGGLING.values(), ids=SMUGGLING.keys())
async def test_a_request_line_the_service_would_split_is_never_sent(
    gateway: GatewayServer, service: RecordingService, fields: Fields
) -> None:
    assert await refused(gateway, fields) == ErrorCodes.PROTOCOL_ERROR
    await asyncio.sleep(0.1)
    assert service.received == b""


async def test_content_length_without_any_data_is_malformed(
    gateway: GatewayServer, service: RecordingService
) -> None:
    # HEADERS with END_STREAM and a Content-Length of 10: an HTTP/1.1 service would wait for ten
    # body bytes and read them from the next request on its connection.
    fields = request(b"/up", b"POST", extra=[(b"content-length", b"10")])
    assert await refused(gateway, fields, end=True) == ErrorCodes.PROTOCOL_ERROR
    await asyncio.sleep(0.1)
    assert service.received == b""
    # Zero is the one length a request without DATA may declare.
    fields = request(b"/up", b"POST", extra=[(b"content-length", b"0")])
    assert await refused(gateway, fields, end=True) is None
    assert b"content-length: 0\r\n" in service.received


async def test_a_well_formed_request_still_passes(gateway: GatewayServer, service: RecordingService) -> None:
    client = await H2Client.connect(gateway.port)
    try:
        reply = await client.request("PATCH", "/a/b%20c?q=%0D%0A&x=1", [("x-a", "tab\tinside")])
    finally:
        await client.close()
    assert reply.status == 200
    assert service.received.startswith(b"PATCH /a/b%20c?q=%0D%0A&x=1 HTTP/1.1\r\n")
    assert b"x-a: tab\tinside\r\n" in service.received


async def test_streams_reset_in_the_packet_that_opened_them_are_released(gateway: GatewayServer) -> None:
    # HEADERS and RST_STREAM together, 150 times (under the reset budget): each stream's handler
    # task is cancelled before it ever ran. Its cleanup must still run, or the gateway counts
    # 128 requests in flight forever and the connection refuses every stream after them.
    client = await RawH2.connect(gateway.port)
    try:
        frames: list[bytes | RstStreamFrame] = []
        for stream_id in range(1, 301, 2):
            frames.append(client.headers(stream_id, request(b"/up", b"POST"), end_stream=False))
            frames.append(RstStreamFrame(stream_id, error_code=ErrorCodes.CANCEL))
        client.send(*frames)
        await asyncio.sleep(0.3)
        assert gateway.gateway.inflight == 0
        client.send(client.headers(301, request(b"/after")))
        await client.until(lambda c: c.ended(301))
        assert client.status(301) == 200
        assert client.goaway() is None
    finally:
        await client.close()


async def test_a_huge_header_table_size_does_not_grow_the_gateways_encoder(gateway: GatewayServer) -> None:
    # The client allows a 4 GiB HPACK table. Were the gateway to use it, each response's unique
    # x-request-id and traceparent would stay in its encoder for as long as the connection lives.
    client = await RawH2.connect(gateway.port)
    client.decoder.max_allowed_table_size = 2**32 - 1
    try:
        client.send(SettingsFrame(0, settings={SettingCodes.HEADER_TABLE_SIZE: 2**32 - 1}))
        ids = range(1, 401, 2)
        for batch in range(0, len(ids), 50):  # within the 128 concurrent streams
            sent = ids[batch : batch + 50]
            client.send(*(client.headers(stream_id, request()) for stream_id in sent))
            await client.until(lambda c: all(c.ended(i) for i in sent))  # noqa: B023
        assert {client.status(i) for i in ids} == {200}
        # The table the gateway's header blocks told the decoder to use, after all of them.
        assert client.decoder.header_table.maxsize <= 4096
    finally:
        await client.close()


async def test_a_preface_split_across_segments_is_still_http2(gateway: GatewayServer) -> None:
    # TCP may deliver the preface in pieces; the first piece alone ("PRI * ") is not HTTP/1.1.
    r, w = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        w.write(PREFACE[:6])
        await w.drain()
        await asyncio.sleep(0.1)
        w.write(PREFACE[6:] + SettingsFrame(0).serialize())
        first = await asyncio.wait_for(r.readexactly(9), 5)
    finally:
        w.close()
    assert first[3] == 0x4  # the gateway's SETTINGS frame, not "HTTP/1.1 400"


async def test_an_h2c_upgrade_from_http_1_1_is_not_taken(
    gateway: GatewayServer, service: RecordingService
) -> None:
    r, w = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        w.write(
            b"GET /x HTTP/1.1\r\nHost: localhost\r\nUpgrade: h2c\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
    finally:
        w.close()
    assert head.startswith(b"HTTP/1.1 200 ")  # answered as HTTP/1.1, never 101
    sent = service.received.lower()
    assert b"upgrade" not in sent
    assert b"http2-settings" not in sent


async def test_connection_window_updates_do_not_walk_every_stream(
    gateway: GatewayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 50 responses held back by stream windows of 0, then thousands of 1-byte WINDOW_UPDATEs on
    # the connection: none of them lets a stream send, so none may cost a pass over the streams
    # (that made 13 bytes from the client cost ~50 µs of the gateway's loop per stream held).
    client = await RawH2.connect(gateway.port)
    try:
        client.send(SettingsFrame(0, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}))
        ids = range(1, 101, 2)
        client.send(*(client.headers(stream_id, request()) for stream_id in ids))
        await client.until(lambda c: all(c.status(i) == 200 for i in ids))
        tries = 0
        send_pending = H2ServerProtocol._send_pending

        def counted(self: H2ServerProtocol, ex: object) -> None:
            nonlocal tries
            tries += 1
            send_pending(self, ex)  # type: ignore[arg-type]

        monkeypatch.setattr(H2ServerProtocol, "_send_pending", counted)
        client.send(*[WindowUpdateFrame(0, window_increment=1)] * 2000, PingFrame(0, opaque_data=b"wu-flood"))
        await client.until(lambda c: any(isinstance(f, PingFrame) and "ACK" in f.flags for f in c.frames))
        assert tries < 100
        # The windows open: every response completes.
        client.send(SettingsFrame(0, settings={SettingCodes.INITIAL_WINDOW_SIZE: 65535}))
        await client.until(lambda c: all(c.ended(i) for i in ids))
        assert all(client.reset_code(i) is None for i in ids)
    finally:
        await client.close()


async def test_a_stream_past_the_concurrency_limit_is_refused_not_the_connection(
    gateway: GatewayServer,
) -> None:
    # RFC 9113 §5.1.2: a stream error. Ending the connection would end the 128 streams under way.
    client = await RawH2.connect(gateway.port)

    def pong(payload: bytes) -> Callable[[RawH2], bool]:
        return lambda c: any(isinstance(f, PingFrame) and f.opaque_data == payload for f in c.frames)

    try:
        client.send(PingFrame(0, opaque_data=b"settled!"))  # after our ACK of the gateway's SETTINGS
        await client.until(pong(b"settled!"))
        ids = range(1, 281, 2)  # 140 uploads whose bodies never come: all still open
        client.send(*(client.headers(i, request(b"/up", b"POST"), end_stream=False) for i in ids))
        client.send(PingFrame(0, opaque_data=b"opened!!"))
        await client.until(pong(b"opened!!"))
        refused = [i for i in ids if client.reset_code(i) == ErrorCodes.REFUSED_STREAM]
        assert refused == list(ids[128:])
        assert client.goaway() is None
    finally:
        await client.close()


async def test_a_header_block_left_open_after_a_whole_request_still_times_out(
    tmp_path: Path, service: RecordingService
) -> None:
    # One read: a complete request on stream 1, then the first frame of stream 3's header block,
    # never continued. The completed request must not stop the block's clock.
    config = gateway_config(service.port, limits={"header_read_timeout": "1s"})
    async with serving(tmp_path, config) as server:
        client = await RawH2.connect(server.port)
        try:
            client.send(PingFrame(0, opaque_data=b"settled!"))  # our SETTINGS ACK is in first
            await client.until(lambda c: any(isinstance(f, PingFrame) for f in c.frames))
            client.send(client.headers(1, request()), client.headers(3, request(), end_headers=False))
            await client.until(lambda c: c.goaway() is not None, timeout=5)
        finally:
            await client.close()
    goaway = client.goaway()
    assert goaway is not None
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert goaway.additional_data == b"header block not completed in time"


@pytest.mark.parametrize("method", [b"TRACE", b"trace"])
async def test_trace_is_refused_over_http2_and_never_forwarded(
    gateway: GatewayServer, service: RecordingService, method: bytes
) -> None:
    # The same refusal as over HTTP/1.1 (tests/edge_security/test_gateway_attacks.py): TRACE
    # would echo the cookie back from the service. HTTP/2 admits any token as :method, and a
    # service may read "trace" as TRACE, so the lower-case one is refused too.
    client = await raw_client(gateway.port)
    try:
        stream_id = client.send_request(method.decode(), "/x", [("cookie", "session=secret")])
        reply = await client.response(stream_id, timeout=5)
    finally:
        await client.close()
    assert reply.status == 405
    assert reply.headers["content-type"] == "application/problem+json"
    assert "GET" in reply.headers["allow"]
    assert b"secret" not in reply.body
    # A forwarded request reaches the service before its answer reaches the client: no wait.
    assert service.received == b""


async def test_a_pseudo_header_in_trailers_is_a_stream_error(
    gateway: GatewayServer, service: RecordingService
) -> None:
    # RFC 9113 §8.1: trailers must not carry pseudo-header fields; such a request is malformed.
    # Its body has started (its head may be upstream already): it must not end there as complete.
    client = await RawH2.connect(gateway.port)
    try:
        client.send(client.headers(1, request(b"/up", b"POST"), end_stream=False))
        client.send(DataFrame(1, data=b"hello"))
        await asyncio.sleep(0.2)  # the head and the first bytes go upstream
        client.send(client.headers(1, [(b":path", b"/admin"), (b"x-t", b"1")]))
        client.send(client.headers(3, request()))  # the same connection keeps working
        await client.until(lambda c: c.ended(1) and c.ended(3))
    finally:
        await client.close()
    await asyncio.sleep(0.2)
    assert client.reset_code(1) == ErrorCodes.PROTOCOL_ERROR
    assert client.status(1) is None
    assert client.status(3) == 200
    assert client.goaway() is None
    # A small body is buffered whole before the request goes upstream: none of it went.
    assert b"POST /up" not in service.received
    assert b"/admin" not in service.received
