"""A listening socket serving :class:`ServerProtocol` connections, with graceful shutdown; over
TLS when given an ``ssl.SSLContext`` (the protocol is then chosen after the handshake, see
:mod:`edgeway.http.server_tls`).

Several worker processes may each open a listener on the same port: SO_REUSEPORT lets the kernel
spread new connections across them, which is how one gateway uses every core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from mypy_extensions import mypyc_attr

from edgeway.http.h2.connection import H2ServerProtocol
from edgeway.http.limits import Http2Limits, ServerLimits
from edgeway.http.server import Handler, ServerProtocol
from edgeway.http.server_tls import TlsHandoff, TlsInfo

log = logging.getLogger("edgeway.http")

TICK = 0.1

RejectHook = Callable[[ServerProtocol, int, str], None]

# Connections the kernel queues for accept() per listening socket (capped by net.core.somaxconn).
# A burst of new clients beyond it is dropped at SYN and retried a second later, so it must cover
# the connections a busy gateway sees arrive between two event-loop turns.
BACKLOG = 2048


def bind_socket(host: str, port: int, reuse_port: bool = True, backlog: int = BACKLOG) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


# Compiled builds (mypyc) refuse Python subclasses of compiled classes unless allowed; a listener
# that counts or filters connections (tests, embedders) subclasses this one.
@mypyc_attr(allow_interpreted_subclasses=True)
class Listener:
    """Owns one listening socket and every connection it accepted."""

    def __init__(
        self,
        handler: Handler,
        limits: ServerLimits,
        *,
        on_reject: RejectHook | None = None,
        tls: ssl.SSLContext | None = None,
        http2: Http2Limits | None = None,
    ) -> None:
        self._handler = handler
        self._limits = limits
        self._on_reject = on_reject
        # A TLS listener: every connection's handshake with this context, then the protocol
        # protocol_after_handshake chooses. None: plaintext HTTP/1.1.
        self._tls = tls
        # HTTP/2 served (with these limits): ALPN h2 on TLS (the context must offer it), h2c
        # with prior knowledge on plaintext. None: HTTP/1.1 only.
        self._http2 = http2
        self.connections: set[ServerProtocol] = set()
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event = asyncio.Event()
        self._all_closed.set()
        self._ticker: asyncio.TimerHandle | None = None

    # ConnectionObserver
    def opened(self, conn: ServerProtocol) -> None:
        self.connections.add(conn)
        self._all_closed.clear()

    def closed(self, conn: ServerProtocol) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._all_closed.set()

    def rejected(self, conn: ServerProtocol, status: int, reason: str) -> None:
        if self._on_reject is not None:
            self._on_reject(conn, status, reason)

    def set_handler(self, handler: Handler) -> None:
        """Swap the handler (live reload): new connections, and the next request on every open
        one, use it; requests already running finish with the handler they started with."""
        self._handler = handler
        for conn in self.connections:
            conn.set_handler(handler)

    async def start(self, sock: socket.socket, backlog: int = BACKLOG) -> None:
        loop = asyncio.get_running_loop()
        # create_server calls listen() again on the socket it is given, with its own default
        # backlog (100) unless told: the backlog must be passed here, not only at bind time.
        tls = self._tls
        if tls is None:
            self._server = await loop.create_server(self._plaintext_protocol, sock=sock, backlog=backlog)
        else:
            verified = tls.verify_mode != ssl.CERT_NONE
            self._server = await loop.create_server(
                lambda: TlsHandoff(self.protocol_after_handshake, verified),
                sock=sock,
                backlog=backlog,
                ssl=tls,
                # A client gets as long for its handshake as for its request head: a peer that
                # opens connections and never finishes a handshake holds nothing for a minute.
                ssl_handshake_timeout=self._limits.header_read_timeout,
            )
        self._tick()

    def _plaintext_protocol(self) -> ServerProtocol:
        take = self._take_prior_knowledge if self._http2 is not None else None
        return ServerProtocol(self._handler, self._limits, self, prior_knowledge=take)

    def _take_prior_knowledge(self, conn: ServerProtocol, data: bytes) -> None:
        """A plaintext connection opened with the HTTP/2 preface: HTTP/2 serves it from here."""
        assert self._http2 is not None
        transport = conn.hand_over()
        if transport is None or transport.is_closing():
            return
        protocol = H2ServerProtocol(self._handler, self._limits, self._http2, self)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def protocol_after_handshake(self, tls: TlsInfo) -> asyncio.Protocol:
        """The protocol that serves a TLS connection, by what its handshake negotiated: the one
        place that decides. ``h2`` when this listener serves HTTP/2 (its context offers it);
        ``http/1.1``, or no ALPN at all, is HTTP/1.1."""
        if tls.alpn == "h2" and self._http2 is not None:
            return H2ServerProtocol(self._handler, self._limits, self._http2, self, b"https", tls)
        return ServerProtocol(self._handler, self._limits, self, b"https", tls)

    def _tick(self) -> None:
        """Fire due connection deadlines (head read, keep-alive). A ticker scanning every
        connection 10 times a second costs ~1 µs per 10 connections; per-request timer handles
        cost ~2 µs per request. Timeouts are therefore accurate to TICK seconds."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for conn in list(self.connections):
            if conn.deadline:
                conn.check_deadline(now)
        self._ticker = loop.call_later(TICK, self._tick)

    @property
    def port(self) -> int:
        assert self._server is not None
        # uvloop's Server.sockets is a list where typeshed says tuple, and compiled (mypyc) code
        # checks declared types at run time: read it untyped.
        sockets: Sequence[socket.socket] = getattr(self._server, "sockets")  # noqa: B009
        return int(sockets[0].getsockname()[1])

    async def shutdown(self, grace: float) -> int:
        """Stop accepting, let in-flight exchanges finish up to `grace` seconds, close the rest.

        Returns the number of connections that had to be closed forcibly.
        """
        if self._server is not None:
            self._server.close()
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), timeout=max(0.0, deadline - time.monotonic()))
        forced = len(self.connections)
        for conn in list(self.connections):
            conn.abort()
        if forced:
            log.warning("closed %d connections still busy after the %.1fs grace period", forced, grace)
        if self._server is not None:
            await self._server.wait_closed()
        return forced
