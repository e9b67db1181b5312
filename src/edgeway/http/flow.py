"""Write-side flow control shared by the downstream and upstream protocols.

asyncio calls ``pause_writing`` when a transport's buffer passes its high-water mark and
``resume_writing`` once it drains below the low mark; writers await :meth:`WriteFlow.drain`
between chunks so a slow peer pauses the producer instead of growing the buffer.
Pause and resume are idempotent; a lost connection wakes any waiter with the given error.
"""

from __future__ import annotations

import asyncio


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

    async def drain(self) -> None:
        if self._lost is not None:
            raise self._lost
        if self.paused:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
