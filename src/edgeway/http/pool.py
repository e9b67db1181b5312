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
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections import deque

from edgeway.http.errors import PoolTimeout, UpstreamConnectError, UpstreamTimeout
from edgeway.http.limits import PoolLimits
from edgeway.http.upstream import DeadlineWatch, UpstreamConnection, UpstreamState


class ConnectionPool:
    def __init__(self, host: str, port: int, limits: PoolLimits) -> None:
        self.host = host
        self.port = port
        self.instance = f"{host}:{port}"
        self.limits = limits
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
                handed = await asyncio.wait_for(fut, connect_timeout)
            except TimeoutError:
                raise PoolTimeout(
                    f"no connection to {self.instance} became free within {connect_timeout:g}s "
                    f"({self._cap} in use)",
                    instance=self.instance,
                ) from None
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
        return conn, False

    async def _connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self.instance, self.limits, self._idle_lost, self.deadlines),
                    self.host,
                    self.port,
                )
        except TimeoutError:
            raise UpstreamTimeout("connect", timeout, instance=self.instance) from None
        except OSError as exc:
            raise UpstreamConnectError(
                f"cannot connect to {self.instance}: {exc.strerror or exc}", instance=self.instance
            ) from exc
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._ensure_sweeper()
        return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Return a connection after an exchange: pooled if clean, closed otherwise."""
        if conn.is_reusable and not self._closed:
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
            # No waiter (the loop above emptied the queue), so the freed slot wakes nobody.
            conn.close()
            self._open -= 1
            return
        conn.close()
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
        self._open -= 1
        self._wake_one()

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
                self._open -= 1
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
        for conn in self._idle:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()
