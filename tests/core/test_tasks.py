"""edgeway.tasks: stopping background tasks cancels them, waits for them, and keeps the caller's
own cancellation and the tasks' failures visible."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgeway.tasks import BackgroundTasks, cancel_and_wait, woken


async def _forever(ended: list[str], name: str) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        ended.append(name)


async def test_stop_cancels_every_task_and_waits_until_each_has_ended() -> None:
    ended: list[str] = []
    tasks = BackgroundTasks()
    tasks.start(_forever(ended, "a"), name="a")
    tasks.start(_forever(ended, "b"), name="b")
    await asyncio.sleep(0)
    assert len(tasks) == 2
    await tasks.stop()
    assert sorted(ended) == ["a", "b"]
    assert len(tasks) == 0


async def test_a_task_that_ends_on_its_own_is_let_go() -> None:
    tasks = BackgroundTasks()
    task = tasks.start(asyncio.sleep(0, result=7), name="short")
    assert await task == 7
    await asyncio.sleep(0)
    assert len(tasks) == 0


async def _slow_to_stop(ended: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0.05)  # cleanup that takes a while
        ended.set()


async def test_the_callers_cancellation_propagates_while_it_waits_for_a_task_to_stop() -> None:
    # The hand-written ``with suppress(CancelledError): await task`` swallowed this cancellation
    # and the cancelled shutdown carried on.
    ended = asyncio.Event()
    tasks = BackgroundTasks()
    tasks.start(_slow_to_stop(ended), name="slow")
    await asyncio.sleep(0)
    stopping = asyncio.create_task(tasks.stop())
    await asyncio.sleep(0.01)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    await asyncio.wait_for(ended.wait(), 1)


async def _fails() -> None:
    raise LookupError("broken on purpose")


async def test_a_failed_task_is_logged_with_its_name_when_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    with caplog.at_level(logging.ERROR, logger="edgeway.tasks"):
        tasks.start(_fails(), name="worker-1")
        await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == ["background task worker-1 failed: broken on purpose"]
    await tasks.stop()  # nothing left to stop, nothing raised


async def test_cancel_and_wait_logs_a_failure_instead_of_raising_it(caplog: pytest.LogCaptureFixture) -> None:
    task = asyncio.create_task(_fails(), name="once")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="edgeway.tasks"):
        await cancel_and_wait(task, None)
    assert [r.getMessage() for r in caplog.records] == ["background task once failed: broken on purpose"]


async def test_woken_says_whether_the_event_was_set_in_time() -> None:
    event = asyncio.Event()
    assert not await woken(event, 0.01)
    asyncio.get_running_loop().call_soon(event.set)
    assert await woken(event, 5)


async def test_a_task_cancelled_as_its_event_is_set_is_cancelled() -> None:
    """asyncio.wait_for on Python 3.11 returned True here, and the loop below never ended."""
    event = asyncio.Event()
    rounds = 0

    async def idle() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            event.clear()
            await woken(event, 5)

    task = asyncio.create_task(idle())
    await asyncio.sleep(0.01)
    event.set()  # in the same iteration as the cancellation
    async with asyncio.timeout(5):
        await cancel_and_wait(task)
    assert task.cancelled()
    assert rounds == 1
