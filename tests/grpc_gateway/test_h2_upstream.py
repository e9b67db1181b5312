"""The HTTP/2 upstream client (edgeway.http.h2_upstream, h2_pool) against a real grpcio server:
streams multiplexed on one connection, trailers, flow control both ways, GOAWAY."""

from __future__ import annotations

import asyncio
import ssl
import struct
from pathlib import Path

import pytest
import trustme
from grpc_backend import backend
from kittest.v1 import ledger_pb2

from edgeway.http.errors import UpstreamConnectError, UpstreamTimeout
from edgeway.http.h2_pool import H2Pool
from edgeway.http.h2_upstream import H2Refused, StreamReset
from edgeway.http.upstream_tls import client_context


def frame(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


def unframe(data: bytes) -> list[bytes]:
    out = []
    while data:
        size = struct.unpack(">I", data[1:5])[0]
        out.append(data[5 : 5 + size])
        data = data[5 + size :]
    return out


def call_headers(authority: str, method: str) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", authority.encode()),
        (b":path", f"/kittest.v1.Ledger/{method}".encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ]


async def read_all(stream: object) -> bytes:
    from edgeway.http.h2_upstream import H2Stream

    assert isinstance(stream, H2Stream)
    chunks = []
    while chunk := await stream.read():
        chunks.append(chunk)
    return b"".join(chunks)


async def test_unary_calls_share_one_connection_and_end_in_trailers() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:

            async def record(n: int) -> tuple[dict[bytes, bytes], bytes, dict[bytes, bytes]]:
                stream = await pool.open_stream(call_headers(server.target, "Record"), 1.0)
                await stream.send(frame(ledger_pb2.Entry(account="a", amount=n).SerializeToString()), True)
                head = dict(await stream.response())
                body = await read_all(stream)
                assert stream.trailers is not None
                return head, body, dict(stream.trailers)

            results = await asyncio.gather(*(record(n) for n in range(1, 21)))
            assert len(pool.connections) == 1
            for head, body, trailers in results:
                assert head[b":status"] == b"200"
                assert ledger_pb2.Receipt.FromString(unframe(body)[0]).count == 1
                assert trailers[b"grpc-status"] == b"0"
            assert server.ledger.balances["a"] == sum(range(1, 21))
        finally:
            pool.close()


async def test_an_error_status_arrives_in_trailers_with_its_message() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            stream = await pool.open_stream(call_headers(server.target, "Record"), 1.0)
            await stream.send(frame(ledger_pb2.Entry(account="").SerializeToString()), True)
            await stream.response()
            assert await read_all(stream) == b""
            trailers = dict(stream.trailers or ())
            head = dict(await stream.response())
            status = trailers.get(b"grpc-status", head.get(b"grpc-status"))
            message = trailers.get(b"grpc-message", head.get(b"grpc-message"))
            assert status == b"3"
            assert message == b"an entry needs an account: caf%C3%A9"
        finally:
            pool.close()


async def test_large_bodies_flow_both_ways_past_the_windows() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            # Client streaming: 3 MB up, past the instance's 64 KiB default windows.
            stream = await pool.open_stream(call_headers(server.target, "Import"), 1.0)
            entry = frame(ledger_pb2.Entry(account="x" * 3000, amount=1).SerializeToString())
            await stream.send(entry * 1000, True)
            await stream.response()
            body = await read_all(stream)
            assert ledger_pb2.Receipt.FromString(unframe(body)[0]).count == 1000
            # Server streaming: many messages down, read slowly (acknowledged as read).
            stream = await pool.open_stream(call_headers(server.target, "Ticks"), 1.0)
            await stream.send(frame(ledger_pb2.TicksRequest(count=2000).SerializeToString()), True)
            await stream.response()
            ticks = unframe(await read_all(stream))
            assert [ledger_pb2.Tick.FromString(t).n for t in ticks] == list(range(2000))
            assert dict(stream.trailers or ())[b"grpc-status"] == b"0"
        finally:
            pool.close()


async def test_a_reset_stream_fails_its_reader_only() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            slow = await pool.open_stream(call_headers(server.target, "Wait"), 1.0)
            await slow.send(frame(ledger_pb2.WaitRequest(millis=5000).SerializeToString()), True)
            await asyncio.sleep(0.1)  # the handler is waiting (grpcio sends no headers before its reply)
            slow.reset()
            with pytest.raises(StreamReset):
                await slow.response()
            with pytest.raises(StreamReset):
                await slow.read()
            stream = await pool.open_stream(call_headers(server.target, "Balance"), 1.0)
            await stream.send(frame(ledger_pb2.BalanceRequest(account="a").SerializeToString()), True)
            await stream.response()
            await read_all(stream)
            assert dict(stream.trailers or ())[b"x-ledger-instance"] == b"ledger-1"
            for _ in range(50):
                if "cancelled" in server.seen():
                    break
                await asyncio.sleep(0.02)
            assert "cancelled" in server.seen()
        finally:
            pool.close()


async def test_goaway_takes_the_connection_out_and_the_next_stream_reconnects() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            first = await pool.open_stream(call_headers(server.target, "Wait"), 1.0)
            await first.send(frame(ledger_pb2.WaitRequest(millis=300).SerializeToString()), True)
            conn = pool.connections[0]
            # What the instance does on a graceful stop: GOAWAY, the open stream finishes.
            conn._goaway(last_stream_id=first.stream_id, code=0)
            assert not conn.available
            assert pool.take() is None
            second = await pool.open_stream(call_headers(server.target, "Balance"), 1.0)
            await second.send(frame(ledger_pb2.BalanceRequest(account="a").SerializeToString()), True)
            await second.response()
            await read_all(second)
            assert pool.connections[-1] is not conn
            await first.response()
            assert unframe(await read_all(first))
            await asyncio.wait_for(conn.closed, 1.0)  # closed after its last stream
            assert pool.connections == [pool.connections[-1]]
            assert conn not in pool.connections
        finally:
            pool.close()


async def test_a_graceful_server_stop_lets_the_stream_in_flight_finish() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            stream = await pool.open_stream(call_headers(server.target, "Wait"), 1.0)
            await stream.send(frame(ledger_pb2.WaitRequest(millis=300).SerializeToString()), True)
            await asyncio.sleep(0.05)
            stopping = asyncio.ensure_future(server.server.stop(grace=2.0))  # grpcio sends GOAWAY
            conn = pool.connections[0]
            for _ in range(50):
                if conn.going_away:
                    break
                await asyncio.sleep(0.01)
            assert conn.going_away
            assert pool.take() is None
            await stream.response()
            reply = ledger_pb2.WaitReply.FromString(unframe(await read_all(stream))[0])
            assert reply.instance == "ledger-1"
            assert dict(stream.trailers or ())[b"grpc-status"] == b"0"
            await stopping
        finally:
            pool.close()


async def test_streams_above_a_goaway_are_refused_for_a_retry() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            stream = await pool.open_stream(call_headers(server.target, "Wait"), 1.0)
            conn = pool.connections[0]
            conn._goaway(last_stream_id=0, code=0)
            with pytest.raises(H2Refused):
                await stream.response()
            with pytest.raises(H2Refused):
                conn.open_stream(call_headers(server.target, "Wait"))
        finally:
            pool.close()


async def test_a_server_stop_fails_streams_in_flight() -> None:
    async with backend() as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:
            stream = await pool.open_stream(call_headers(server.target, "Wait"), 1.0)
            await stream.send(frame(ledger_pb2.WaitRequest(millis=5000).SerializeToString()), True)
            await asyncio.sleep(0.05)
            await server.server.stop(grace=None)
            # grpcio either cancels the call with a status or drops the connection under it.
            try:
                head = dict(await asyncio.wait_for(stream.response(), 2.0))
                await read_all(stream)
            except StreamReset:
                return
            status = dict(stream.trailers or ()).get(b"grpc-status", head.get(b"grpc-status"))
            assert status not in (None, b"0")
        finally:
            pool.close()


async def test_nothing_listening_is_a_connect_error() -> None:
    async with backend() as server:
        port = server.port
    pool = H2Pool("127.0.0.1", port)
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await pool.open_stream(call_headers(f"127.0.0.1:{port}", "Wait"), 1.0)


def test_a_call_on_uvloop() -> None:
    # The gateway runs on uvloop, whose transports are not asyncio.Transport subclasses.
    import uvloop

    async def call() -> bytes:
        async with backend() as server:
            pool = H2Pool("127.0.0.1", server.port)
            try:
                stream = await pool.open_stream(call_headers(server.target, "Balance"), 1.0)
                await stream.send(frame(ledger_pb2.BalanceRequest(account="a").SerializeToString()), True)
                await stream.response()
                await read_all(stream)
                return dict(stream.trailers or ())[b"grpc-status"]
            finally:
                pool.close()

    assert uvloop.run(call()) == b"0"


async def test_a_tls_instance_that_does_not_choose_h2_is_a_connect_error(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server_context.set_alpn_protocols(["http/1.1"])  # an HTTP/1.1-only server
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0, ssl=server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = server.sockets[0].getsockname()[1]
    pool = H2Pool("127.0.0.1", port, client_context(ca=str(ca_file), alpn=("h2",)))
    try:
        with pytest.raises(
            UpstreamConnectError, match=r"does not speak HTTP/2 over TLS \(ALPN chose nothing\)"
        ):
            await pool.open_stream(call_headers(f"127.0.0.1:{port}", "Wait"), 2.0)
    finally:
        pool.close()
        server.close()
        await server.wait_closed()


async def test_a_full_connection_makes_the_pool_open_another() -> None:
    async with backend(max_streams=1) as server:
        pool = H2Pool("127.0.0.1", server.port)
        try:

            async def wait() -> bytes:
                stream = await pool.open_stream(call_headers(server.target, "Wait"), 2.0)
                await stream.send(frame(ledger_pb2.WaitRequest(millis=300).SerializeToString()), True)
                await stream.response()
                await read_all(stream)
                return dict(stream.trailers or ())[b"grpc-status"]

            # The instance's SETTINGS arrive with the first connection; from then on each
            # connection carries one stream, so concurrent calls need a connection each.
            assert await wait() == b"0"
            started = asyncio.get_running_loop().time()
            assert await asyncio.gather(*(wait() for _ in range(4))) == [b"0"] * 4
            assert asyncio.get_running_loop().time() - started < 1.0  # side by side, not queued
            assert len(pool.connections) == 4
        finally:
            pool.close()


async def test_an_instance_that_never_sends_its_settings_times_out_the_connect() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # TCP up, never a frame

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = H2Pool("127.0.0.1", port)
    try:
        for _ in range(2):  # the second call tries again: nothing of the first attempt is left
            with pytest.raises(UpstreamTimeout, match=r"connect timeout after 0\.2s"):
                await pool.open_stream(call_headers(f"127.0.0.1:{port}", "Wait"), 0.2)
            await asyncio.sleep(0.05)
        assert len(accepted) == 2
        assert pool.connections == []
    finally:
        pool.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
