from __future__ import annotations

import asyncio

import pytest

from edgeway.resilience.concurrency import ConcurrencyLimiter, ConcurrencyPolicy
from edgeway.resilience.errors import Overloaded


async def test_without_a_queue_the_request_over_the_limit_is_refused_at_once() -> None:
    limiter = ConcurrencyLimiter(ConcurrencyPolicy(limit=2, retry_after=3.0), name="route x")
    await limiter.acquire()
    await limiter.acquire()
    with pytest.raises(Overloaded) as caught:
        await limiter.acquire()
    assert caught.value.retry_after == 3.0
    assert "route x" in str(caught.value)
    assert limiter.refused == 1
    limiter.release()
    await limiter.acquire()
    assert limiter.active == 2


async def test_a_queued_request_gets_the_next_free_slot_in_order() -> None:
    limiter = ConcurrencyLimiter(ConcurrencyPolicy(limit=1, queue=2, max_wait=5.0))
    await limiter.acquire()
    order: list[int] = []

    async def wait(n: int) -> None:
        await limiter.acquire()
        order.append(n)

    first = asyncio.create_task(wait(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(wait(2))
    await asyncio.sleep(0)
    assert limiter.waiting == 2
    assert not limiter.try_acquire()  # a late arrival cannot overtake the queue
    limiter.release()
    await first
    limiter.release()
    await second
    assert order == [1, 2]
    assert limiter.active == 1


async def test_the_queue_is_bounded_and_the_wait_has_a_deadline() -> None:
    limiter = ConcurrencyLimiter(ConcurrencyPolicy(limit=1, queue=1, max_wait=0.05))
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full"):
        await limiter.acquire()
    with pytest.raises(Overloaded, match=r"no slot freed within 0\.05s"):
        await waiting
    assert limiter.waiting == 0
    limiter.release()
    assert limiter.active == 0


async def test_a_cancelled_waiter_does_not_leak_its_slot() -> None:
    limiter = ConcurrencyLimiter(ConcurrencyPolicy(limit=1, queue=1, max_wait=5.0))
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    limiter.release()
    assert limiter.active == 0
    assert limiter.try_acquire()


def test_policy_refuses_an_unbounded_wait() -> None:
    with pytest.raises(ValueError, match="max_wait"):
        ConcurrencyPolicy(limit=1, queue=5)
    with pytest.raises(ValueError):
        ConcurrencyPolicy(limit=0)
