"""A listening socket serving :class:`ServerProtocol` connections, with graceful shutdown; over
TLS when given an ``ssl.SSLContext`` (the protocol is then chosen after the handshake, see
:mod:`edgeway.http.server_tls`).

Several worker processes may each open a listener on the same port: SO_REUSEPORT lets the kernel
spread new connections across them, which is how one gateway uses every core.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable

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

# accept() failing for want of descriptors or memory leaves the socket readable: stop watching it
# for this long instead of spinning (asyncio's own server does the same).
ACCEPT_RETRY_S = 0.1
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


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


def _unwatch(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    # uvloop's remove_reader returns None where typeshed says bool, and compiled (mypyc) code
    # checks declared types at run time: call it untyped.
    remove_reader: Callable[[int], object] = getattr(loop, "remove_reader")  # noqa: B009
    remove_reader(sock.fileno())


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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock: socket.socket | None = None
        self._port = 0
        self._backlog = BACKLOG
        # Accepted sockets whose transports are being set up (the TLS handshake, for TLS).
        self._accepting: set[asyncio.Task[None]] = set()
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
        """Serve connections arriving on the bound socket ``sock``.

        The listener accepts by itself rather than through ``loop.create_server``: uvloop's server
        accepts one connection per event-loop turn, and a gateway saturated by the connections it
        already has runs turns of tens of milliseconds, so a thousand clients connecting at once
        waited seconds in the accept queue while the open connections were served. Here every
        pending connection (up to ``backlog``) is accepted each time the socket is readable."""
        loop = asyncio.get_running_loop()
        sock.listen(backlog)
        sock.setblocking(False)
        self._loop = loop
        self._sock = sock
        self._port = int(sock.getsockname()[1])
        self._backlog = backlog
        loop.add_reader(sock.fileno(), self._accept_pending)
        self._tick()

    def _accept_pending(self) -> None:
        sock, loop = self._sock, self._loop
        if sock is None or loop is None:
            return
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.warning("cannot accept connections (%s); retrying in %gs", exc, ACCEPT_RETRY_S)
                _unwatch(loop, sock)
                loop.call_later(ACCEPT_RETRY_S, self._resume_accepting)
                return
            task = loop.create_task(self._serve_accepted(conn))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

    def _resume_accepting(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock.fileno(), self._accept_pending)

    async def _serve_accepted(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        tls = self._tls
        try:
            if tls is None:
                await loop.connect_accepted_socket(self._plaintext_protocol, conn)
            else:
                verified = tls.verify_mode != ssl.CERT_NONE
                await loop.connect_accepted_socket(
                    lambda: TlsHandoff(self.protocol_after_handshake, verified),
                    conn,
                    ssl=tls,
                    # A client gets as long for its handshake as for its request head: a peer
                    # that opens connections and never finishes a handshake holds nothing for a
                    # minute.
                    ssl_handshake_timeout=self._limits.header_read_timeout,
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            # The client went away or failed its handshake before it was served: nothing to
            # answer, and the transport has closed the socket.
            log.debug("connection dropped before it was served: %s", exc)
            conn.close()

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
        assert self._port, "the listener has not started"
        return self._port

    def _stop_accepting(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            if self._loop is not None:
                _unwatch(self._loop, sock)
            sock.close()

    async def shutdown(self, grace: float) -> int:
        """Stop accepting, let in-flight exchanges finish up to `grace` seconds, close the rest.

        Returns the number of connections that had to be closed forcibly.
        """
        self._stop_accepting()
        for task in list(self._accepting):
            task.cancel()
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
        return forced
