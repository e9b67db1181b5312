"""Background tasks a component owns: start them, and stop them by cancelling and waiting.

Stopping a task by hand (``task.cancel()`` then ``with suppress(CancelledError): await task``) has
two faults this module does not: the ``suppress`` also swallows the *caller's* cancellation when
it arrives during the wait, so a cancelled shutdown carries on as if nothing happened; and an
exception the task ended with is raised from ``stop()`` of an unrelated component, or never
retrieved at all. Here the caller's cancellation propagates, and a task's own failure is logged
with its traceback once, when it happens.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["BackgroundTasks", "cancel_and_wait", "woken"]

T = TypeVar("T")
_log = logging.getLogger("edgeway.tasks")


async def woken(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; whether it was set.

    For a task's idle wait. Not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 that
    returns, instead of raising, when the task is cancelled in the loop iteration in which the
    event is set, and a loop that goes on after it never ends (:func:`cancel_and_wait` waits for
    it forever). ``asyncio.timeout`` keeps the cancellation.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and return once every one has ended.

    Cancelling the caller meanwhile cancels the caller (the tasks have been asked to end); an
    exception a task ended with is logged, not raised.
    """
    for task in await _cancel([task for task in tasks if task is not None]):
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            name = task.get_name() if isinstance(task, asyncio.Task) else repr(task)
            _log.error("background task %s failed: %s", name, exc, exc_info=exc)


async def _cancel(tasks: list[asyncio.Future[Any]]) -> list[asyncio.Future[Any]]:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)
    return tasks


class BackgroundTasks:
    """The background tasks of one component: :meth:`start` each, :meth:`stop` them all.

    A task is held (so it is not garbage collected while it runs) until it ends. One that ends
    with an exception is logged on ``logger`` when it ends, with its name.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._log = logger if logger is not None else _log

    def start(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("background task %s failed: %s", task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        """How many tasks are still running."""
        return len(self._tasks)

    async def stop(self) -> None:
        """Cancel every running task and wait until all have ended (see :func:`cancel_and_wait`;
        a failure was logged when it happened)."""
        await _cancel(list(self._tasks))
