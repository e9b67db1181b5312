"""Follow an InstanceSource in the background and wait for the sets it yields."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from edgeway.discovery.source import InstanceSource


class Followed:
    def __init__(self) -> None:
        self.sets: list[tuple[float, list[str]]] = []  # (monotonic time, instance set)
        self._changed = asyncio.Event()

    @property
    def latest(self) -> list[str] | None:
        return self.sets[-1][1] if self.sets else None

    def add(self, urls: list[str]) -> None:
        self.sets.append((time.monotonic(), urls))
        self._changed.set()

    async def until(self, predicate: Callable[[list[str]], bool], timeout: float) -> float:
        """Wait for a set matching ``predicate``; returns the time it arrived."""
        async with asyncio.timeout(timeout):
            while True:
                for at, urls in self.sets:
                    if predicate(urls):
                        return at
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def follow(source: InstanceSource) -> AsyncIterator[Followed]:
    followed = Followed()

    async def run() -> None:
        async for urls in source.watch():
            followed.add(urls)

    task = asyncio.create_task(run())
    try:
        yield followed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            # A watch must stop promptly when cancelled; a hang here is a bug, not a wait.
            async with asyncio.timeout(5.0):
                await task
