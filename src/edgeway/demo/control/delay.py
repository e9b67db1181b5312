"""A TCP proxy that makes a loopback port feel like a distant one: every byte is held for half a
client round trip (RTT) on its way in and half on its way out, and a new connection waits one
RTT before anything flows (the TCP handshake a real network would cost).

On loopback a call costs a fraction of a millisecond, so the number of calls a screen needs
makes no visible difference; at 40 ms (a good mobile link) or 150 ms (another continent) it is
what the user waits for. There is no netem on a laptop without root, so the delay is emulated
in user space, one proxy in front of each port a client reaches.

The RTT can be changed while connections are open (:attr:`DelayProxy.rtt_ms`); a chunk read
after the change is held for the new value, and bytes are never reordered. Memory is bounded:
at most ``max_connections`` connections (more are closed at once) and at most ``queue_chunks``
chunks of up to 64 KiB in flight per direction (the reader waits when they are all held).

>>> async with DelayProxy("127.0.0.1", 8081, rtt_ms=40) as proxy:
...     print(proxy.url)   # http://127.0.0.1:<port>, the BFF 40 ms away
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from edgeway.tasks import cancel_and_wait

__all__ = ["DelayProxy"]

log = logging.getLogger("edgeway.demo.delay")

_CHUNK = 64 * 1024
_EOF = b""


class DelayProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        rtt_ms: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        max_connections: int = 256,
        queue_chunks: int = 64,
        handshake: bool = True,
    ) -> None:
        if rtt_ms < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {rtt_ms}")
        if max_connections < 1 or queue_chunks < 1:
            raise ValueError("max_connections and queue_chunks must be at least 1")
        self.target = (target_host, target_port)
        self.host = host
        self._port = port
        self._rtt_s = rtt_ms / 1000
        self.max_connections = max_connections
        self.queue_chunks = queue_chunks
        self.handshake = handshake
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}
        self.accepted = 0
        self.refused = 0  # connections closed because max_connections were open

    # -- settings --------------------------------------------------------------------------------

    @property
    def rtt_ms(self) -> float:
        return self._rtt_s * 1000

    @rtt_ms.setter
    def rtt_ms(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"rtt_ms must be >= 0, got {value}")
        self._rtt_s = value / 1000

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the delay proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> DelayProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self._port, limit=_CHUNK)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Aborting the sockets ends every pipe (a read sees the end, a write fails); cancelling
        # the connection tasks instead would leave asyncio's stream server to log each one.
        for writers in self._connections.values():
            for writer in writers:
                writer.transport.abort()
        tasks = list(self._connections)
        if tasks:
            await asyncio.wait(tasks, timeout=self.rtt_ms / 1000 + 1.0)

    async def __aenter__(self) -> DelayProxy:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- one connection --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None  # asyncio runs each accepted connection in a task
        writers = self._connections[task] = [writer]
        try:
            await self._serve(reader, writer, writers)
        finally:
            del self._connections[task]

    async def _serve(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        writers: list[asyncio.StreamWriter],
    ) -> None:
        try:
            if self.handshake and self._rtt_s:
                # What the client's connect() would have waited for; what it sent meanwhile
                # waits in the socket buffer and is delayed from here on.
                await asyncio.sleep(self._rtt_s)
            try:
                upstream_r, upstream_w = await asyncio.open_connection(*self.target, limit=_CHUNK)
            except OSError as exc:
                log.debug("delay proxy: cannot reach %s:%d: %s", *self.target, exc)
                client_w.close()
                return
            writers.append(upstream_w)
            try:
                await asyncio.gather(self._pipe(client_r, upstream_w), self._pipe(upstream_r, client_w))
            finally:
                upstream_w.transport.abort()
        finally:
            client_w.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy ``source`` to ``sink``, each chunk held for half the RTT from when it was read."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(self.queue_chunks)

        async def read() -> None:
            try:
                while True:
                    data = await source.read(_CHUNK)
                    await held.put((loop.time() + self._rtt_s / 2, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                await held.put((loop.time(), _EOF))

        async def write() -> None:
            while True:
                due, data = await held.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    # Half-close: the other direction may still be answering.
                    with contextlib.suppress(OSError, RuntimeError):
                        if sink.can_write_eof():
                            sink.write_eof()
                    return
                sink.write(data)
                await sink.drain()

        reader = asyncio.create_task(read())
        try:
            await write()
        except (ConnectionError, OSError):
            pass  # the peer went away: the other direction ends with its own EOF or error
        finally:
            await cancel_and_wait(reader)
