"""A route's weighted split between services, and what each side's requests did.

:class:`Split` is the part of a split a controller drives at run time: its weights, which it
changes with :meth:`Split.set_weights` (the next request uses them; nothing is rebuilt), and the
outcomes of each side's requests, which it reads with :meth:`Split.outcomes`. One split object
serves a route across live reloads of the same split definition (same services, same weights in
the file), so weights set at run time stay; a reload that changes the definition starts from
the file's weights.

Choosing a side:

- without a sticky key, at random in proportion to the weights (a side at 0 % never);
- with a key (``proxy.sticky``), by weighted rendezvous hashing on the key
  (:mod:`edgeway.resilience.hashing`): the same key gets the same side while the weights stay;
  when one side's weight goes up (the others keeping their proportions: in a two-way split,
  always), keys move only to it, and when it goes down, only away from it.

Outcomes are counted per side (:class:`SideStats`): requests, errors (a 5xx answered, or the
request failing: a refused, timed-out or reset upstream is answered 5xx), and latency in the
histogram buckets the metrics use. :class:`Outcomes` is a snapshot; the difference of two
snapshots is what happened between them (a controller's window).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgeway.gateway.traffic.config import SplitSide, check_split
from edgeway.resilience.hashing import score, stable_hash

__all__ = ["BOUNDS", "Outcomes", "SideStats", "Split", "SplitWeightsError"]

# Upper bounds (seconds) of the latency buckets; one more bucket past the last holds the rest.
# The metrics' own (edgeway.observability.metrics.LATENCY_BUCKETS, a test checks they agree):
# not imported, as that module loads prometheus-client, which a gateway loads only once it
# records a metric.
BOUNDS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class SplitWeightsError(ValueError):
    """Weights a split cannot take: an unknown or missing service, a weight outside 0-100, or
    weights that do not sum to 100. Nothing was changed."""


@dataclass(frozen=True, slots=True)
class Outcomes:
    """What one side's requests did, from the start (or between two snapshots: ``b - a``).

    ``buckets[i]`` counts requests that took at most ``BOUNDS[i]`` seconds (and more than the
    bound before); the last counts the rest.
    """

    requests: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    buckets: tuple[int, ...] = (0,) * (len(BOUNDS) + 1)

    def __sub__(self, earlier: Outcomes) -> Outcomes:
        return Outcomes(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            self.latency_sum - earlier.latency_sum,
            tuple(a - b for a, b in zip(self.buckets, earlier.buckets, strict=True)),
        )

    @property
    def error_rate(self) -> float | None:
        """Errors per request, None without requests."""
        return self.errors / self.requests if self.requests else None

    @property
    def mean_latency(self) -> float | None:
        """Seconds per request, None without requests."""
        return self.latency_sum / self.requests if self.requests else None

    def latency_quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile (0-1) of latency: the bound of the bucket it falls
        in (``inf`` past the last bound). None without requests."""
        if not self.requests:
            return None
        rank = max(1, math.ceil(q * self.requests))
        seen = 0
        for bound, count in zip((*BOUNDS, math.inf), self.buckets, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return math.inf

    def to_json(self) -> dict[str, Any]:
        p99 = self.latency_quantile(0.99)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": None if self.error_rate is None else round(self.error_rate, 6),
            "mean_latency_ms": None if self.mean_latency is None else round(self.mean_latency * 1000, 3),
            "p99_latency_ms_at_most": None if p99 is None or math.isinf(p99) else p99 * 1000,
        }


class SideStats:
    """The running counts of one side's requests (a route and a service). Shared by every
    config generation that serves the route, so they count on across live reloads."""

    __slots__ = ("buckets", "errors", "latency_sum", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latency_sum = 0.0
        self.buckets = [0] * (len(BOUNDS) + 1)

    def record(self, status: int, seconds: float) -> None:
        """One request's end: the status answered (or what its failure is answered with)."""
        self.requests += 1
        if status >= 500:
            self.errors += 1
        self.latency_sum += seconds
        self.buckets[bisect.bisect_left(BOUNDS, seconds)] += 1

    def snapshot(self) -> Outcomes:
        return Outcomes(self.requests, self.errors, self.latency_sum, tuple(self.buckets))


class Split:
    """A route's weighted split between services (see the module docstring).

    The run-time API a controller uses: :attr:`weights`, :meth:`set_weights`, :meth:`outcomes`;
    :attr:`declared` are the weights the config file gives.
    """

    def __init__(
        self,
        route: str,
        sides: Sequence[SplitSide],
        stats: Mapping[str, SideStats] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.route = route
        self.services: tuple[str, ...] = tuple(side.service for side in sides)
        self.declared: tuple[float, ...] = tuple(float(side.weight) for side in sides)
        self.rng = rng or random.Random()
        self.stats: dict[str, SideStats] = {s: (stats or {}).get(s) or SideStats() for s in self.services}
        self._ids = tuple(stable_hash(service.encode()) for service in self.services)
        self._weights: tuple[float, ...] = ()
        self._bounds: list[float] = []
        self.changes = 0  # weight changes made at run time
        self._apply(self.declared)

    def __repr__(self) -> str:
        shares = ", ".join(f"{s}={w:g}" for s, w in zip(self.services, self._weights, strict=True))
        return f"<Split {self.route}: {shares}>"

    @property
    def definition(self) -> tuple[tuple[str, float], ...]:
        """What a live reload compares: the services and the weights the config gives them."""
        return tuple(zip(self.services, self.declared, strict=True))

    # -- weights ------------------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """The weights in force, percent by service."""
        return dict(zip(self.services, self._weights, strict=True))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Make ``weights`` (percent by service: every side, summing to 100) the split's weights;
        the next request is split by them. Raises :class:`SplitWeightsError`, changing nothing."""
        unknown = sorted(set(weights) - set(self.services))
        missing = [s for s in self.services if s not in weights]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown service(s) {', '.join(unknown)}")
            if missing:
                parts.append(f"no weight for {', '.join(missing)}")
            services = ", ".join(self.services)
            raise SplitWeightsError(
                f"split of route {self.route!r}: {'; '.join(parts)} (its services: {services})"
            )
        try:
            sides = [SplitSide(service=s, weight=float(weights[s])) for s in self.services]
        except ValueError as exc:  # pydantic's ValidationError: a weight outside 0-100
            raise SplitWeightsError(
                f"split of route {self.route!r}: weights must be 0 to 100 ({exc})"
            ) from None
        problems = check_split(sides)
        if problems:
            raise SplitWeightsError(f"split of route {self.route!r}: {problems[0][1]}")
        self._apply(tuple(side.weight for side in sides))
        self.changes += 1

    def reset(self) -> None:
        """Back to the weights the config gives."""
        self._apply(self.declared)
        self.changes += 1

    def _apply(self, weights: Iterable[float]) -> None:
        applied = tuple(weights)
        bounds: list[float] = []
        total = 0.0
        for weight in applied:
            total += weight
            bounds.append(total)
        # One assignment each: a request reads the old pair or the new one (one loop, no tearing
        # across an await: choose() does not await).
        self._weights = applied
        self._bounds = bounds

    # -- choosing ---------------------------------------------------------------------------
    def choose(self, key: int | None) -> int:
        """The index of the side a request goes to; ``key``: its sticky key hash, if any."""
        weights = self._weights
        if key is None:
            # A point in [0, total): the first bound above it is a side's, never a side at 0 %
            # (its bound equals the one before it).
            bounds = self._bounds
            return bisect.bisect_right(bounds, self.rng.random() * bounds[-1])
        best, best_score = 0, -2.0
        for index, node in enumerate(self._ids):
            s = score(key, node, weights[index])
            if s > best_score:
                best, best_score = index, s
        return best

    # -- outcomes ---------------------------------------------------------------------------
    def outcomes(self) -> dict[str, Outcomes]:
        """A snapshot of each side's outcomes since the gateway started, by service."""
        return {service: self.stats[service].snapshot() for service in self.services}

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view (for the admin API)."""
        outcomes = self.outcomes()
        return {
            "route": self.route,
            "sides": [
                {
                    "service": service,
                    "weight": self._weights[i],
                    "declared_weight": self.declared[i],
                    **outcomes[service].to_json(),
                }
                for i, service in enumerate(self.services)
            ],
            "changed_at_run_time": self.changes,
        }
