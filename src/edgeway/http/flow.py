"""Write-side flow control shared by the downstream and upstream protocols.

asyncio calls ``pause_writing`` when a transport's buffer passes its high-water mark and
``resume_writing`` once it drains below the low mark; writers await :meth:`WriteFlow.drain`
between chunks so a slow peer pauses the producer instead of growing the buffer.
Pause and resume are idempotent; a lost connection wakes any waiter with the given error.
A drain given a timeout raises :class:`SendTimeout` when the peer has not read the buffer down
in that time (a client with a zero window must not hold the writer, and what it holds, forever).
"""

from __future__ import annotations

import asyncio

from edgeway.http.errors import SendTimeout


class WriteFlow:
    __slots__ = ("_lost", "_waiter", "paused")

    def __init__(self) -> None:
        self.paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._lost: Exception | None = None

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def lost(self, exc: Exception) -> None:
        self._lost = exc
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(exc)

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the buffer is below its low mark; ``timeout``: at most this long (only a
        paused writer waits, so an unpaused drain costs no timer)."""
        if self._lost is not None:
            raise self._lost
        if self.paused:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter, timeout) if timeout is not None else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(SendTimeout(timeout))
