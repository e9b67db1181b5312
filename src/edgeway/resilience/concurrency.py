"""Load shedding: a bound on requests in flight, with an optional small queue that has a deadline.

Beyond ``limit`` concurrent requests a new one waits in a FIFO queue of at most ``queue``
entries for at most ``max_wait`` seconds; when the queue is full, or the wait runs out, it is
refused at once with :class:`~edgeway.resilience.errors.Overloaded`. Refusing early is the
point: an unbounded queue turns overload into timeouts for everyone, while a fast 503 with
``Retry-After`` lets clients and balancers go elsewhere and keeps latency flat for the requests
admitted.

The fast path (:meth:`ConcurrencyLimiter.try_acquire`) is synchronous: under the limit no
coroutine, future or timer is created. A released slot is handed straight to the first waiter,
so a late arrival cannot overtake the queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from edgeway.resilience.errors import Overloaded

__all__ = ["ConcurrencyLimiter", "ConcurrencyPolicy"]


@dataclass(frozen=True, slots=True)
class ConcurrencyPolicy:
    limit: int
    queue: int = 0
    max_wait: float = 0.0  # seconds a queued request may wait for a slot
    retry_after: float = 1.0  # the hint given to refused clients, seconds

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError("limit must be at least 1")
        if self.queue < 0 or self.max_wait < 0:
            raise ValueError("queue and max_wait must be >= 0")
        if self.queue > 0 and self.max_wait == 0:
            raise ValueError("a queue needs a max_wait > 0 (an unbounded wait is what shedding prevents)")


class ConcurrencyLimiter:
    def __init__(self, policy: ConcurrencyPolicy, name: str = "") -> None:
        self.policy = policy
        self.name = name
        self.active = 0
        self.refused = 0  # requests shed since start
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"<ConcurrencyLimiter {self.name!r} {self.active}/{self.policy.limit} waiting={self.waiting}>"

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (never when others are queued)."""
        if self.active < self.policy.limit and not self._waiters:
            self.active += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting in the bounded queue if allowed; :class:`Overloaded` otherwise."""
        if self.try_acquire():
            return
        if len(self._waiters) >= self.policy.queue:
            raise self._refuse("the queue is full" if self.policy.queue else "no queue")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.policy.max_wait)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return  # a slot was handed over as the wait ran out: keep it
            fut.cancel()
            raise self._refuse(f"no slot freed within {self.policy.max_wait:g}s") from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot but the caller is gone: pass it on
            else:
                fut.cancel()
            raise
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def release(self) -> None:
        # Hand the slot to the first live waiter instead of freeing it, so the count stays right.
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1

    def _refuse(self, why: str) -> Overloaded:
        self.refused += 1
        return Overloaded(
            f"{self.name or 'limit'}: {self.policy.limit} requests in flight already ({why})",
            self.policy.retry_after,
        )
