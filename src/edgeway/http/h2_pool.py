"""The HTTP/2 connections to one instance: usually one, multiplexing every request.

A request takes a stream on the first open connection that is below the instance's
``SETTINGS_MAX_CONCURRENT_STREAMS``; only when every connection is full (or going away after a
``GOAWAY``) is another one opened. Concurrent requests that find no connection share the one
being opened rather than each opening their own. Over TLS the instance must choose ``h2`` by
ALPN: one that answers in HTTP/1.1 is a connect error, never a silent downgrade.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable

from edgeway.http.errors import UpstreamConnectError, UpstreamTimeout
from edgeway.http.h2_upstream import H2ConnectionDead, H2Stream, H2UpstreamConnection
from edgeway.http.pool import open_connection

__all__ = ["H2Pool"]


class H2Pool:
    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        ping_interval: float | None = None,
        ping_timeout: float = 20.0,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname or host
        self.instance = f"{host}:{port}"
        self.connections: list[H2UpstreamConnection] = []
        self._connecting: asyncio.Future[H2UpstreamConnection] | None = None
        self._closed = False
        # Keepalive of each connection (H2UpstreamConnection): None sends no PING.
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout

    def __repr__(self) -> str:
        return f"<H2Pool {self.instance} connections={len(self.connections)}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def take(self) -> H2UpstreamConnection | None:
        """An open connection with room for one more stream, without connecting."""
        for conn in self.connections:
            if conn.available:
                return conn
        return None

    async def open_stream(
        self, headers: Iterable[tuple[bytes, bytes]], connect_timeout: float, end_stream: bool = False
    ) -> H2Stream:
        """A new stream carrying ``headers`` on a connection with room (connecting if none has)."""
        conn = self.take()
        if conn is None:
            conn = await self.connect(connect_timeout)
        return conn.open_stream(headers, end_stream)

    async def connect(self, timeout: float) -> H2UpstreamConnection:
        """A connection with room: the one being opened, or a new one."""
        if self._closed:
            raise UpstreamConnectError(f"the pool of {self.instance} is closed", instance=self.instance)
        pending = self._connecting
        if pending is None:
            pending = self._connecting = asyncio.get_running_loop().create_future()
            opener = asyncio.get_running_loop().create_task(self._open(pending, timeout))
            opener.add_done_callback(lambda _t: None)
        try:
            async with asyncio.timeout(timeout):
                conn = await asyncio.shield(pending)
        except TimeoutError:
            raise UpstreamTimeout("connect", timeout, instance=self.instance) from None
        if not conn.available:
            # Filled by the requests that shared the connect, or gone already: try once more.
            return self.take() or await self.connect(timeout)
        return conn

    async def _open(self, pending: asyncio.Future[H2UpstreamConnection], timeout: float) -> None:
        """Connect (TCP, TLS, the instance's SETTINGS) within ``timeout``, the connect timeout of
        the call that started it: an instance that never answers must not leave every later
        call waiting on the same attempt."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                conn = await self._handshake(loop)
        except BaseException as exc:
            self._connecting = None
            if isinstance(exc, TimeoutError):
                exc = UpstreamTimeout("connect", timeout, instance=self.instance)
            if not pending.done():
                pending.set_exception(exc)
                pending.exception()  # retrieved: every waiter may have timed out already
            if not isinstance(exc, Exception):
                raise
            return
        self._connecting = None
        if self._closed:
            conn.close()
            pending.set_exception(
                UpstreamConnectError(f"the pool of {self.instance} is closed", instance=self.instance)
            )
            pending.exception()
            return
        self.connections.append(conn)
        conn.closed.add_done_callback(lambda _f: self._forget(conn))
        pending.set_result(conn)

    async def _handshake(self, loop: asyncio.AbstractEventLoop) -> H2UpstreamConnection:
        conn = await open_connection(
            lambda: H2UpstreamConnection(self.instance, loop, self.ping_interval, self.ping_timeout),
            self.host,
            self.port,
            self.instance,
            self.tls,
            self.server_hostname,
        )
        try:
            if self.tls is not None:
                transport = conn.transport
                chosen = (
                    transport.get_extra_info("ssl_object").selected_alpn_protocol() if transport else None
                )
                if chosen != "h2":
                    raise UpstreamConnectError(
                        f"{self.instance} does not speak HTTP/2 over TLS (ALPN chose {chosen or 'nothing'}); "
                        "set the service's protocol to http1 or serve h2 there",
                        instance=self.instance,
                    )
            # Its SETTINGS first: streams opened before would exceed a limit the instance has
            # not said yet (max concurrent streams), and be refused.
            await conn.settled
        except BaseException:
            conn.close()
            raise
        return conn

    def _forget(self, conn: H2UpstreamConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)

    def close(self) -> None:
        """Close every connection: streams in flight fail."""
        self._closed = True
        for conn in list(self.connections):
            conn.close()
        self.connections.clear()

    def instance_down(self, reason: str) -> None:
        """The instance was found down (its health check): the streams still waiting for an
        answer fail now (as on HTTP/1.1, instead of waiting out their timeout on an instance
        known to be down), and each connection is PINGed: one that does not answer within the
        ping timeout is aborted, the streams it was answering with it."""
        message = f"{self.instance} was marked down by its health check ({reason}) before it answered"
        for conn in list(self.connections):
            conn.fail_unanswered(H2ConnectionDead(message, instance=self.instance))
            conn.probe()

    def removed(self) -> None:
        """The instance left the service (discovery, an operator's drain): no new streams; each
        connection is PINGed, so the streams in flight on an instance that stopped answering
        fail within the ping timeout, while a live one finishes them (then its connections
        close)."""
        for conn in list(self.connections):
            conn.probe()
        self.close_when_idle()

    def close_when_idle(self) -> None:
        """No new streams; each connection closes after its last stream (a drained instance)."""
        self._closed = True
        for conn in list(self.connections):
            conn.close_when_idle()
