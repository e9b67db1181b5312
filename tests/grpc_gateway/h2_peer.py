"""A real HTTP/2 server on a raw socket (the h2 library frames it) that a test can freeze: a
frozen connection stops reading, so it answers nothing more (no PING ACK, no response), as a
stopped process or a host gone from the network would; new connections are served as before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class PeerConnection(asyncio.Protocol):
    def __init__(self, peer: H2Peer) -> None:
        self.peer = peer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer.connections.append(self)
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def freeze(self) -> None:
        """Read nothing more on this connection (the kernel still takes what fits)."""
        assert self.transport is not None
        self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            assert self.transport is not None
            self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.PingReceived):
                self.peer.pings += 1
            elif isinstance(event, h2.events.RequestReceived):
                path = dict(event.headers or []).get(b":path", b"")
                if path != b"/hang":  # /hang: never answered
                    self.conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", "2")])
                    self.conn.send_data(event.stream_id, b"ok", end_stream=True)
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.peer.lost += 1


class H2Peer:
    def __init__(self) -> None:
        self.connections: list[PeerConnection] = []
        self.pings = 0
        self.lost = 0
        self.port = 0


@contextlib.asynccontextmanager
async def h2_peer() -> AsyncIterator[H2Peer]:
    peer = H2Peer()
    server = await asyncio.get_running_loop().create_server(lambda: PeerConnection(peer), "127.0.0.1", 0)
    peer.port = int(server.sockets[0].getsockname()[1])
    try:
        yield peer
    finally:
        server.close()
        for conn in peer.connections:
            if conn.transport is not None:
                conn.transport.abort()
