"""A rolling time window of two counters (calls and failures, requests and retries).

The window is cut into ``buckets`` slices; adding rotates out the slices that have aged past the
window, so totals always cover the last ``window`` seconds (to within one slice) in O(1) per add
and constant memory, whatever the request rate. Hystrix and resilience4j keep their rolling
statistics the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["RollingCounts"]


class RollingCounts:
    """Two counters summed over the last ``window`` seconds."""

    __slots__ = ("_a", "_b", "_clock", "_epoch", "_n", "_width", "total_a", "total_b")

    def __init__(self, window: float, buckets: int = 10, clock: Callable[[], float] = time.monotonic) -> None:
        if window <= 0:
            raise ValueError("window must be positive (seconds)")
        if buckets < 1:
            raise ValueError("buckets must be at least 1")
        self._n = buckets
        self._width = window / buckets
        self._clock = clock
        self._a = [0] * buckets
        self._b = [0] * buckets
        self._epoch = int(clock() / self._width)
        self.total_a = 0
        self.total_b = 0

    def __repr__(self) -> str:
        return f"<RollingCounts {self.total_a}/{self.total_b} over {self._width * self._n:g}s>"

    def add(self, a: int = 0, b: int = 0) -> None:
        # Called on every request (up to three times): the rotation check is inlined.
        epoch = int(self._clock() / self._width)
        if epoch != self._epoch:
            self._rotate_to(epoch)
        slot = epoch % self._n
        self._a[slot] += a
        self._b[slot] += b
        self.total_a += a
        self.total_b += b

    def totals(self) -> tuple[int, int]:
        """Both sums over the window as it stands now."""
        epoch = int(self._clock() / self._width)
        if epoch != self._epoch:
            self._rotate_to(epoch)
        return self.total_a, self.total_b

    def clear(self) -> None:
        for i in range(self._n):
            self._a[i] = self._b[i] = 0
        self.total_a = self.total_b = 0

    def _rotate_to(self, epoch: int) -> None:
        # Zero every slice that now lies outside the window (all of them after a long pause).
        for e in range(self._epoch + 1, min(epoch, self._epoch + self._n) + 1):
            slot = e % self._n
            self.total_a -= self._a[slot]
            self.total_b -= self._b[slot]
            self._a[slot] = self._b[slot] = 0
        self._epoch = epoch
