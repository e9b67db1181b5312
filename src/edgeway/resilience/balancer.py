"""Load balancers: pick one instance of a service for each request.

Both work over any object with an ``outstanding`` count (requests in flight) and an ``available``
flag, so discovery can change the instance list and outlier ejection can take instances out
without the balancer knowing about either.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Generic, Protocol, TypeVar

from edgeway.resilience.errors import NoInstanceAvailable

__all__ = ["Balanceable", "LeastOutstanding", "NoInstanceAvailable", "RoundRobin", "make_balancer"]


class Balanceable(Protocol):
    outstanding: int
    available: bool


T = TypeVar("T", bound=Balanceable)


class RoundRobin(Generic[T]):
    """Each available instance in turn."""

    def __init__(self) -> None:
        self._next = 0

    def pick(self, instances: Sequence[T], exclude: Collection[T] = ()) -> T:
        """The next available instance; ``exclude`` (those a request already tried) are skipped."""
        n = len(instances)
        for _ in range(n):
            inst = instances[self._next % n]
            self._next = (self._next + 1) % n
            if inst.available and (not exclude or inst not in exclude):
                return inst
        raise NoInstanceAvailable("no available instance")


class LeastOutstanding(Generic[T]):
    """Power of two choices: of two random available instances, the one with fewer requests in
    flight. Nearly as good as a full scan at spreading load and O(1), and it avoids the herd
    effect of every gateway picking the same 'least loaded' instance at once."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, instances: Sequence[T], exclude: Collection[T] = ()) -> T:
        """The less loaded of two random available instances not in ``exclude``."""
        if exclude:
            live: Sequence[T] = [i for i in instances if i.available and i not in exclude]
        elif all(i.available for i in instances):
            live = instances
        else:
            live = [i for i in instances if i.available]
        if not live:
            raise NoInstanceAvailable("no available instance")
        if len(live) == 1:
            return live[0]
        a, b = self._rng.sample(range(len(live)), 2)
        x, y = live[a], live[b]
        return x if x.outstanding <= y.outstanding else y


Balancer = RoundRobin[T] | LeastOutstanding[T]


def make_balancer(kind: str) -> RoundRobin[T] | LeastOutstanding[T]:
    if kind == "round_robin":
        return RoundRobin()
    if kind == "least_outstanding":
        return LeastOutstanding()
    raise ValueError(f"unknown balancer {kind!r} (expected round_robin or least_outstanding)")
