"""A connection pool per upstream instance.

Decisions (hand out an idle connection, open a new one, or queue) are made synchronously; the
I/O (connecting) happens after, so the bookkeeping can never be torn by a suspension. Idle
connections are kept LIFO: the most recently used one is warm and least likely to have been
closed by the upstream's own keep-alive timer; the oldest expire after `idle_timeout`, and at
most `max_idle` are kept.

By default the number of open connections is not capped (nginx's default too): a request that
finds no idle connection opens one, so throughput to a slow service scales with the load
instead of stopping at cap / latency. With `max_connections`, requests beyond it wait in
arrival order for a connection to be released (or a slot to free up), up to the connect timeout.

Every connection the pool opens holds a slot (counted against `max_connections` when a cap is
set) from the moment it is reserved until the connection leaves the pool, and it leaves exactly
once, through :meth:`ConnectionPool._forget`, whichever way it goes: released unclean, lost
while idle, expired, closed beyond `max_idle`, handed over to a tunnel
(:meth:`ConnectionPool.detach`), or abandoned by a waiter that was cancelled just as it was
handed a connection. A slot given back twice would let the pool
open more than its limit; one never given back would shrink the pool for good.

A pool with ``tls`` (an :class:`ssl.SSLContext`, see :mod:`edgeway.http.upstream_tls`) opens
its connections with a TLS handshake, sending and verifying ``server_hostname`` (the host by
default); the handshake counts against the connect timeout. A handshake that fails is an
:class:`UpstreamTlsError` (502) naming the instance and why, never a plaintext connection. The
pooled connections are the same objects either way: reuse, keep-alive and the stale-connection
retry work over TLS unchanged.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from edgeway.http.errors import (
    InstanceDown,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamTimeout,
    UpstreamTlsError,
)
from edgeway.http.limits import PoolLimits
from edgeway.http.upstream import DeadlineWatch, UpstreamConnection, UpstreamState
from edgeway.http.upstream_tls import describe_tls_error

# The protocol a connection speaks: HTTP/1.1 (UpstreamConnection) or HTTP/2 (edgeway.http.h2_pool).
P = TypeVar("P", bound=asyncio.Protocol)


async def open_connection(
    factory: Callable[[], P],
    host: str,
    port: int,
    instance: str,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> P:
    """Open one upstream connection (TCP, then the TLS handshake when ``tls`` is given); a
    failure is an :class:`UpstreamConnectError` (:class:`UpstreamTlsError` for the handshake)
    naming ``instance``. The caller bounds the time it may take."""
    loop = asyncio.get_running_loop()
    try:
        if tls is None:
            _, conn = await loop.create_connection(factory, host, port)
        else:
            _, conn = await loop.create_connection(
                factory, host, port, ssl=tls, server_hostname=server_hostname or host
            )
    except ssl.SSLError as exc:
        raise _tls_failed(instance, exc) from exc
    except OSError as exc:
        if tls is not None and isinstance(
            exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError
        ):
            # TCP was up (a refusal is ConnectionRefusedError): the peer hung up mid-handshake.
            raise _tls_failed(instance, exc) from exc
        raise UpstreamConnectError(
            f"cannot connect to {instance}: {exc.strerror or exc}", instance=instance
        ) from exc
    return conn


def _tls_failed(instance: str, exc: OSError) -> UpstreamTlsError:
    reason = describe_tls_error(exc)
    return UpstreamTlsError(
        f"TLS handshake with {instance} failed: {reason}", instance=instance, reason=reason
    )


class ConnectionPool:
    def __init__(
        self,
        host: str,
        port: int,
        limits: PoolLimits,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.instance = f"{host}:{port}"
        self.limits = limits
        # The context new connections handshake with (None: plaintext); replaced when the
        # certificates are reloaded, connections already open keep theirs.
        self.tls = tls
        self.server_hostname = server_hostname if server_hostname is not None else host
        # Read on every acquire: an int compare, with "no cap" as a cap never reached.
        self._cap: int = limits.max_connections if limits.max_connections is not None else sys.maxsize
        self._max_idle: int = limits.max_idle
        self._idle: list[UpstreamConnection] = []
        self._open = 0  # connecting + busy + idle
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.deadlines = DeadlineWatch()

    def __repr__(self) -> str:
        idle, waiting = len(self._idle), len(self._waiters)
        return f"<ConnectionPool {self.instance} open={self._open} idle={idle} waiting={waiting}>"

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def closed(self) -> bool:
        """Closed: no connection goes back to the idle list (busy ones close when released)."""
        return self._closed

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    def take_idle(self) -> UpstreamConnection | None:
        """An idle pooled connection if there is one, without waiting or connecting."""
        while self._idle:
            conn = self._idle.pop()
            if conn.state is UpstreamState.IDLE:
                return conn
            self._forget(conn)
        return None

    async def acquire(self, connect_timeout: float, fresh: bool = False) -> tuple[UpstreamConnection, bool]:
        """A connection ready for a new exchange, and whether it was reused from the pool."""
        if not fresh:
            conn = self.take_idle()
            if conn is not None:
                return conn, True
        if self._open >= self._cap:
            fut: asyncio.Future[UpstreamConnection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout(connect_timeout):
                    handed = await fut
            except BaseException as exc:
                # Handed a connection (or a slot) in the same turn as we timed out or were
                # cancelled: it is ours, and nobody else will give it back.
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    self._abandon(fut.result())
                if isinstance(exc, TimeoutError):
                    raise PoolTimeout(
                        f"no connection to {self.instance} became free within {connect_timeout:g}s "
                        f"({self._cap} in use)",
                        instance=self.instance,
                    ) from None
                raise
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
            if handed is not None:
                return handed, True
            # handed None: a slot was freed for us (the count was kept for us); connect below
        else:
            self._open += 1
        try:
            conn = await self._connect(connect_timeout)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise
        conn.holds_slot = True
        return conn, False

    def _abandon(self, handed: UpstreamConnection | None) -> None:
        if handed is None:
            self._open -= 1  # the slot reserved for us
            self._wake_one()
        else:
            self._forget(handed)
            handed.close()

    async def _connect(self, timeout: float) -> UpstreamConnection:
        try:
            async with asyncio.timeout(timeout):
                conn = await open_connection(
                    lambda: UpstreamConnection(self.instance, self.limits, self._idle_lost, self.deadlines),
                    self.host,
                    self.port,
                    self.instance,
                    self.tls,
                    self.server_hostname,
                )
        except TimeoutError:
            raise UpstreamTimeout("connect", timeout, instance=self.instance) from None
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ensure_sweeper()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after an exchange: pooled if clean, closed otherwise.

        Safe to call for a connection that already left the pool (detached, lost): it only
        closes it then."""
        if conn.is_reusable and conn.holds_slot and not self._closed:
            conn.mark_idle()
            while self._waiters:
                w = self._waiters.popleft()
                if not w.done():
                    conn.state = UpstreamState.BUSY
                    w.set_result(conn)
                    return
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
            # More idle connections than worth keeping: this one goes (no waiter is woken, the
            # loop above emptied the queue).
            conn.close()
            self._forget(conn)
            return
        conn.close()
        self._forget(conn)

    def instance_down(self, reason: str) -> None:
        """The instance was found down (its health check): requests queued for a connection
        fail now, before they are sent (so any method may go elsewhere), then the exchanges
        still waiting for a response head (idempotent ones may be retried elsewhere).

        The waiters go first: the connections the failed exchanges give back must not be
        handed to requests that would then be sent to the same instance."""
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(
                    InstanceDown(
                        f"{self.instance} was marked down ({reason}) while the request waited for a "
                        "connection",
                        instance=self.instance,
                        sent=False,
                    )
                )
        message = f"{self.instance} was marked down by its health check ({reason}) before it answered"
        self.deadlines.fail_unanswered(lambda: InstanceDown(message, instance=self.instance))

    def detach(self, conn: UpstreamConnection) -> None:
        """``conn`` leaves the pool for good but stays open (a tunnel after a 101 owns it now):
        its slot goes to the next request at once, however long the tunnel lives."""
        self._forget(conn)

    def _forget(self, conn: UpstreamConnection) -> None:
        """Give back ``conn``'s slot, once."""
        if conn.holds_slot:
            conn.holds_slot = False
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                self._open += 1  # reserve the slot for the waiter
                w.set_result(None)
                return

    def _idle_lost(self, conn: UpstreamConnection) -> None:
        try:
            self._idle.remove(conn)
        except ValueError:
            return
        self._forget(conn)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            interval = max(0.5, self.limits.idle_timeout / 2)
            self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self.limits.idle_timeout
        keep: list[UpstreamConnection] = []
        for conn in self._idle:
            if conn.idle_since < cutoff or conn.state is not UpstreamState.IDLE:
                conn.close()
                self._forget(conn)
            else:
                keep.append(conn)
        self._idle = keep
        if self._open > 0:
            self._ensure_sweeper()

    def close(self) -> None:
        self._closed = True
        self.deadlines.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
            self._forget(conn)
