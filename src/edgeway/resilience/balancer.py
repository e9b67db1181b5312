"""Load balancers: pick one instance of a service for each request.

Every balancer works over any object with an ``outstanding`` count (requests in flight) and an
``available`` flag, so discovery can change the instance list and outlier ejection can take
instances out without the balancer knowing about either. The weighted ones also read a static
``weight`` (``services.<name>.weights``), and consistent hashing a stable ``hash_id`` per
instance (a hash of its address).

- :class:`RoundRobin`: each available instance in turn.
- :class:`LeastOutstanding`: the less loaded of two random instances (power of two choices).
- :class:`WeightedRoundRobin`: smooth weighted round robin (nginx's): an instance of weight 3
  gets exactly three requests in every cycle of the total weight, interleaved, not in a burst.
- :class:`WeightedLeastOutstanding`: power of two choices whose two candidates are drawn in
  proportion to weight.
- :class:`Rendezvous`: consistent hashing for one request's key (a user, a session): the same
  key gets the same instance while it is available; when an instance leaves, only its keys move
  (:mod:`edgeway.resilience.hashing`). Made per request by a sticky route.

A service without weights gets :class:`RoundRobin` or :class:`LeastOutstanding`, which read
nothing else: weights cost nothing where they are not configured.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Collection, Sequence
from typing import Generic, Protocol, TypeVar

from edgeway.resilience.errors import NoInstanceAvailable
from edgeway.resilience.hashing import score

__all__ = [
    "Balanceable",
    "Balancer",
    "LeastOutstanding",
    "NoInstanceAvailable",
    "Rendezvous",
    "RoundRobin",
    "Weighted",
    "WeightedLeastOutstanding",
    "WeightedRoundRobin",
    "make_balancer",
]


class Balanceable(Protocol):
    outstanding: int
    available: bool


class Weighted(Balanceable, Protocol):
    """An instance the weighted balancers and consistent hashing can pick."""

    weight: int  # static share of the traffic (1 unless configured)
    current_weight: int  # smooth weighted round robin's running counter
    hash_id: int  # stable identity for consistent hashing (a hash of the address)


T = TypeVar("T", bound=Balanceable)
W = TypeVar("W", bound=Weighted)


class Balancer(Generic[T]):
    """Picks one available instance not in ``exclude`` (those a request already tried)."""

    def pick(self, instances: Sequence[T], exclude: Collection[T] = ()) -> T:
        raise NotImplementedError


class RoundRobin(Balancer[T]):
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


class LeastOutstanding(Balancer[T]):
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


class WeightedRoundRobin(Balancer[W]):
    """Smooth weighted round robin: each pick adds every live instance's weight to its running
    counter, takes the instance with the highest counter and subtracts the total from it. Over
    a cycle of the total weight each instance is picked exactly ``weight`` times, spread out."""

    def pick(self, instances: Sequence[W], exclude: Collection[W] = ()) -> W:
        best: W | None = None
        total = 0
        for inst in instances:
            if not inst.available or (exclude and inst in exclude):
                continue
            inst.current_weight += inst.weight
            total += inst.weight
            if best is None or inst.current_weight > best.current_weight:
                best = inst
        if best is None:
            raise NoInstanceAvailable("no available instance")
        best.current_weight -= total
        return best


class WeightedLeastOutstanding(Balancer[W]):
    """Power of two choices, the two candidates drawn in proportion to their weight: the one
    with fewer requests in flight wins, the first drawn on a tie. At low load (every instance
    idle) the shares follow the weights; under load, the less loaded instance is preferred."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, instances: Sequence[W], exclude: Collection[W] = ()) -> W:
        live = [i for i in instances if i.available and (not exclude or i not in exclude)]
        if not live:
            raise NoInstanceAvailable("no available instance")
        if len(live) == 1:
            return live[0]
        bounds: list[int] = []
        total = 0
        for inst in live:
            total += inst.weight
            bounds.append(total)
        first = bisect.bisect_right(bounds, self._rng.random() * total)
        second = bisect.bisect_right(bounds, self._rng.random() * total)
        x = live[min(first, len(live) - 1)]
        y = live[min(second, len(live) - 1)]
        return y if y.outstanding < x.outstanding else x


class Rendezvous(Balancer[W]):
    """Consistent hashing for one key (weighted rendezvous hashing): the available instance not
    in ``exclude`` with the highest score for the key. The same key gets the same instance while
    that instance is available; one that leaves (removed, ejected, its breaker open) moves only
    the keys it had, each to its next-best instance, and they come back when it returns."""

    def __init__(self, key: int) -> None:
        self.key = key  # the request's key hash (:func:`~edgeway.resilience.hashing.stable_hash`)

    def pick(self, instances: Sequence[W], exclude: Collection[W] = ()) -> W:
        key = self.key
        best: W | None = None
        best_score = -1.0
        for inst in instances:
            if not inst.available or (exclude and inst in exclude):
                continue
            s = score(key, inst.hash_id, float(inst.weight))
            if best is None or s > best_score:
                best, best_score = inst, s
        if best is None:
            raise NoInstanceAvailable("no available instance")
        return best


def make_balancer(kind: str, weighted: bool = False) -> Balancer[W]:
    """The balancer of a service: ``kind`` as configured; ``weighted`` when any of its instances
    has a weight other than 1."""
    if kind == "round_robin":
        return WeightedRoundRobin() if weighted else RoundRobin()
    if kind == "least_outstanding":
        return WeightedLeastOutstanding() if weighted else LeastOutstanding()
    raise ValueError(f"unknown balancer {kind!r} (expected round_robin or least_outstanding)")
