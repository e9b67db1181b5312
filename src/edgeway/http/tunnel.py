"""A byte tunnel between a client and an upstream after a protocol switch (WebSocket).

Both protocol objects hand their bytes to the tunnel. Flow control is symmetric: when one side's
socket buffer fills up, the other side stops reading until it drains. An idle timer closes the
tunnel when neither side has sent anything for `idle_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeway.http.server import ServerProtocol
    from edgeway.http.upstream import UpstreamConnection


class Tunnel:
    def __init__(self, downstream: ServerProtocol, upstream: UpstreamConnection, idle_timeout: float) -> None:
        self._down = downstream
        self._up = upstream
        self._idle_timeout = idle_timeout
        self._last = time.monotonic()
        self._loop = asyncio.get_event_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self.bytes_up = 0
        self.bytes_down = 0

    def start(self) -> None:
        early_client = self._down.take_upgrade(self)
        early_upstream = self._up.take_upgrade(self)
        if early_upstream:
            self.from_upstream(early_upstream)
        if early_client:
            self.from_downstream(early_client)
        self._schedule(self._idle_timeout)

    # -- data ----------------------------------------------------------------------------
    def from_downstream(self, data: bytes) -> None:
        self._last = time.monotonic()
        self.bytes_up += len(data)
        t = self._up.transport
        if t is not None and not t.is_closing():
            t.write(data)

    def from_upstream(self, data: bytes) -> None:
        self._last = time.monotonic()
        self.bytes_down += len(data)
        t = self._down.transport
        if t is not None and not t.is_closing():
            t.write(data)

    # -- flow control --------------------------------------------------------------------
    def downstream_paused(self, paused: bool) -> None:
        t = self._up.transport
        if t is not None and not t.is_closing():
            (t.pause_reading if paused else t.resume_reading)()

    def upstream_paused(self, paused: bool) -> None:
        t = self._down.transport
        if t is not None and not t.is_closing():
            (t.pause_reading if paused else t.resume_reading)()

    # -- ending ----------------------------------------------------------------------------
    def downstream_lost(self) -> None:
        self._up.close()
        self._done()

    def upstream_lost(self) -> None:
        self._down.close()
        self._done()

    def close(self) -> None:
        self._up.close()
        self._down.close()
        self._done()

    def _done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed.done():
            self.closed.set_result(None)

    def _schedule(self, delay: float) -> None:
        self._timer = self._loop.call_later(delay, self._check_idle)

    def _check_idle(self) -> None:
        idle = time.monotonic() - self._last
        if idle >= self._idle_timeout:
            self.close()
        else:
            self._schedule(self._idle_timeout - idle)
