"""``Transport.connected`` follows the broker: False while the link is lost and the client
reconnects on its own, True again once it has (what a gateway's revocation push watches).

NATS: an embedded nats-server on a free port, stopped and started again. RabbitMQ: the broker on
loopback behind a TCP relay of the test's own, cut and restored (the shared broker stays up).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conftest import pipe, require
from edgeway.bus.embedded import EmbeddedNats
from edgeway.bus.nats import NatsTransport
from edgeway.bus.rabbit import RabbitTransport

from .helpers import eventually


class Relay:
    """A TCP relay from a local port to ``target``; :meth:`cut` drops every link and stops
    listening, :meth:`restore` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0  # the first listen takes a free port; a restore listens on it again
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers.update((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_nats_transport_is_not_connected_while_the_broker_is_away(tmp_path: Path) -> None:
    server = EmbeddedNats(port=0, data_dir=tmp_path / "nats")
    await asyncio.to_thread(server.start)
    transport = NatsTransport(server.url, prefix="cs")
    try:
        await transport.connect()
        assert transport.connected
        await asyncio.to_thread(server.stop)
        await eventually(lambda: not transport.connected, timeout=5.0, what="the disconnect")
        await asyncio.to_thread(server.start)
        await eventually(lambda: transport.connected, timeout=10.0, what="the reconnect")
    finally:
        await transport.close()
        await asyncio.to_thread(server.stop)
    assert not transport.connected


async def test_a_rabbitmq_transport_is_not_connected_while_the_link_is_cut() -> None:
    require("rabbitmq")
    relay = Relay(("127.0.0.1", 5672))
    await relay.restore()
    # reconnect_interval: aio-pika's default is 5 s between attempts
    transport = RabbitTransport(f"amqp://guest:guest@127.0.0.1:{relay.port}/?reconnect_interval=0.2")
    try:
        await transport.connect()
        assert transport.connected
        await relay.cut()
        await eventually(lambda: not transport.connected, timeout=5.0, what="the disconnect")
        await relay.restore()
        await eventually(lambda: transport.connected, timeout=10.0, what="the reconnect")
    finally:
        await transport.close()
        await relay.cut()
    assert not transport.connected
