"""A gateway's traffic shifting as one component: its routes' splits and mirrors, what carries
over a live reload, and the metrics.

Each config generation has its :class:`Traffic` component (``traffic_of(env)``); what must
outlive a generation is kept in a :class:`TrafficBook` in ``env.carried`` (handed from the
running gateway to the one a reload builds):

- the :class:`~edgeway.gateway.traffic.split.Split` serving each route. A new generation whose
  route has the same split definition (services and the file's weights) takes the same object,
  so weights a controller set stay, and a controller holding it keeps driving the route; a
  changed definition gets a new split with the file's weights. The book is updated when the new
  generation starts, so a reload that fails leaves it as it was;
- each side's outcome counts (by route and service), and each mirror's (by route and shadow
  service), so counters never go back.

Metrics, read at scrape time from the book (no work per request):

=============================================== ==============================================
``edgeway_traffic_requests_total``               counter, labels ``route``, ``service``,
                                                 ``outcome`` (``ok`` | ``error``: 5xx or failed)
``edgeway_traffic_request_duration_seconds``     histogram, labels ``route``, ``service``
``edgeway_traffic_weight_percent``               gauge, labels ``route``, ``service``: the split
                                                 weights in force
``edgeway_mirror_requests_total``                counter, labels ``route``, ``service`` (the
                                                 shadow), ``outcome`` (:mod:`.mirror`)
``edgeway_mirror_duration_seconds``              histogram, labels ``route``, ``service``
``edgeway_strangler_percent``                    gauge, label ``route``: the new side's share
``edgeway_strangler_step``                       gauge, label ``route`` (1 the first step)
``edgeway_strangler_status``                     gauge, labels ``route``, ``status`` (1 or 0)
``edgeway_strangler_rollbacks``                  gauge, label ``route``: rollbacks so far
=============================================== ==============================================

Sides are counted on routes that send to more than one service (a split, canary rules).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edgeway.gateway.core.pipeline import GatewayEnv
from edgeway.gateway.traffic.config import SplitSide
from edgeway.gateway.traffic.mirror import MirrorStats
from edgeway.gateway.traffic.split import BOUNDS, SideStats, Split
from edgeway.gateway.traffic.strangler_store import MemoryStore, StranglerStateStore, make_store

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from edgeway.gateway.traffic.action import TrafficAction
    from edgeway.gateway.traffic.mirror import Mirror
    from edgeway.gateway.traffic.strangler import StranglerRun
    from edgeway.gateway.traffic.strangler_config import StranglerRule

__all__ = ["BOOK_KEY", "Traffic", "TrafficBook", "running_traffic", "traffic_of"]

BOOK_KEY = "traffic"  # in env.carried
COMPONENT_KEY = "traffic"  # in env.components


class TrafficBook:
    """Traffic state that outlives a config generation (see the module docstring)."""

    def __init__(self) -> None:
        self.splits: dict[str, Split] = {}  # by route id, of the newest started generation
        self.stats: dict[tuple[str, str], SideStats] = {}  # by (route id, service)
        self.mirrors: dict[tuple[str, str], MirrorStats] = {}  # by (route id, shadow service)
        self.stranglers: dict[str, StranglerRun] = {}  # by route id, of the newest started generation
        self.strangler_memory = MemoryStore()  # the `memory` strangler store: kept across reloads
        self._registries: list[object] = []  # the metrics registries the collector is in

    def stats_for(self, route: str, service: str) -> SideStats:
        found = self.stats.get((route, service))
        if found is None:
            found = self.stats[(route, service)] = SideStats()
        return found

    def mirror_stats_for(self, route: str, service: str) -> MirrorStats:
        found = self.mirrors.get((route, service))
        if found is None:
            found = self.mirrors[(route, service)] = MirrorStats()
        return found

    def export_to(self, registry: Any) -> None:
        """Have ``registry`` (a prometheus-client registry) read the book at scrape time; once."""
        if any(known is registry for known in self._registries):
            return
        registry.register(_Collector(self))
        self._registries.append(registry)


class Traffic:
    """The traffic component of one config generation (see the module docstring). The run-time
    API: :meth:`split` (a route's :class:`Split`), :meth:`describe`."""

    def __init__(self, env: GatewayEnv) -> None:
        self.env = env
        book = env.carried.get(BOOK_KEY)
        if not isinstance(book, TrafficBook):
            book = env.carried[BOOK_KEY] = TrafficBook()
        self.book = book
        self.splits: dict[str, Split] = {}  # by route id
        self.mirrors: dict[str, Mirror] = {}  # by route id
        self.routes: dict[str, TrafficAction] = {}  # by route id: every traffic-shifting route
        self.stranglers: dict[str, StranglerRun] = {}  # by route id
        self._store: StranglerStateStore | None = None

    def __repr__(self) -> str:
        return f"<Traffic routes={sorted(self.routes)}>"

    # -- building -------------------------------------------------------------------------------
    def split_for(self, route: str, sides: Sequence[SplitSide]) -> Split:
        """The split serving ``route``: the running one when its definition is unchanged."""
        definition = tuple((side.service, float(side.weight)) for side in sides)
        found = self.book.splits.get(route)
        if found is None or found.definition != definition:
            found = Split(
                route, sides, {side.service: self.book.stats_for(route, side.service) for side in sides}
            )
        self.splits[route] = found
        return found

    def stats_for(self, route: str, service: str) -> SideStats:
        return self.book.stats_for(route, service)

    def strangle(self, route: str, rule: StranglerRule, split: Split) -> StranglerRun:
        """Have a strangler rule drive ``route``'s split (run once the gateway starts)."""
        from edgeway.gateway.traffic.strangler import StranglerRun

        if self._store is None:
            self._store = make_store(self.env.config.strangler_store, self.book.strangler_memory)
        run = self.stranglers[route] = StranglerRun(route, rule, split, self._store)
        return run

    # -- Component ------------------------------------------------------------------------------
    async def start(self) -> None:
        self.book.splits = dict(self.splits)
        self.book.stranglers = dict(self.stranglers)
        self.book.export_to(self.env.metrics.registry)
        for run in self.stranglers.values():
            await run.start()

    async def stop(self) -> None:
        for run in self.stranglers.values():
            await run.stop()
        if self._store is not None:
            await self._store.close()
        for mirror in self.mirrors.values():
            await mirror.stop()

    # -- run-time API ----------------------------------------------------------------------------
    def split(self, route: str) -> Split:
        """The split of ``route``; KeyError naming the routes that have one."""
        found = self.splits.get(route)
        if found is None:
            known = ", ".join(sorted(self.splits)) or "none"
            raise KeyError(f"route {route!r} has no split (routes with one: {known})")
        return found

    def strangler(self, route: str) -> StranglerRun:
        """The strangler rule of ``route``; KeyError naming the routes that have one."""
        found = self.stranglers.get(route)
        if found is None:
            known = ", ".join(sorted(self.stranglers)) or "none"
            raise KeyError(f"route {route!r} has no strangler (routes with one: {known})")
        return found

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view of every traffic-shifting route (for the admin API)."""
        out: dict[str, Any] = {}
        for route, action in sorted(self.routes.items()):
            entry: dict[str, Any] = {"services": list(action.actions)}
            if action.split is not None:
                entry["split"] = action.split.describe()["sides"]
            if action.canaries:
                entry["canary"] = [rule.service for rule in action.canaries]
            if action.sticky is not None:
                entry["sticky"] = action.sticky.source
            if action.mirror is not None:
                entry["mirror"] = action.mirror.describe()
            if route in self.stranglers:
                entry["strangler"] = self.stranglers[route].describe()["status"]
            if action.split is None and action.stats is not None:
                entry["outcomes"] = {s: st.snapshot().to_json() for s, st in action.stats.items()}
            out[route] = entry
        return out


def traffic_of(env: GatewayEnv) -> Traffic:
    """The traffic component of this gateway, made on first use (by the first traffic route, as
    the gateway is built). A controller of a gateway already built uses :func:`running_traffic`."""
    return env.shared(COMPONENT_KEY, lambda: Traffic(env))


def running_traffic(env: GatewayEnv) -> Traffic | None:
    """The traffic component of a built gateway (``gateway.env``), None when none of its routes
    shifts traffic. Each config generation has its own: after a live reload, ask the new
    gateway's (a split whose definition did not change is the same :class:`Split` object)."""
    found = env.components.get(COMPONENT_KEY)
    return found if isinstance(found, Traffic) else None


class _Collector:
    """Exports a book's counts and weights when the registry is scraped."""

    def __init__(self, book: TrafficBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily(
            "edgeway_traffic_requests",
            "Requests of traffic-shifting routes by route, service (side) and outcome: ok, or error "
            "(a 5xx answered, or the request failed).",
            labels=("route", "service", "outcome"),
        )
        latency = HistogramMetricFamily(
            "edgeway_traffic_request_duration_seconds",
            "Time from a request's arrival to its end on traffic-shifting routes, by route and service.",
            labels=("route", "service"),
        )
        weights = GaugeMetricFamily(
            "edgeway_traffic_weight_percent",
            "The weight in force of each side of a split (percent), by route and service.",
            labels=("route", "service"),
        )
        for (route, service), stats in sorted(self.book.stats.items()):
            requests.add_metric([route, service, "ok"], stats.requests - stats.errors)
            requests.add_metric([route, service, "error"], stats.errors)
            latency.add_metric([route, service], _cumulative(stats.buckets), stats.latency_sum)
        for route, split in sorted(self.book.splits.items()):
            for service, weight in split.weights.items():
                weights.add_metric([route, service], weight)
        copies = CounterMetricFamily(
            "edgeway_mirror_requests",
            "Mirrored (shadow) copies of requests by route, shadow service and outcome: 2xx-5xx "
            "(answered), timeout, failed (refused, reset, no instance), dropped (too many in "
            "flight), skipped (body too large, an upgrade).",
            labels=("route", "service", "outcome"),
        )
        copy_latency = HistogramMetricFamily(
            "edgeway_mirror_duration_seconds",
            "Time from sending a mirrored (shadow) copy of a request to the end of its answer, or "
            "to its failure, by route and shadow service.",
            labels=("route", "service"),
        )
        for (route, service), mirror in sorted(self.book.mirrors.items()):
            for outcome, count in sorted(mirror.counts.items()):
                copies.add_metric([route, service, outcome], count)
            copy_latency.add_metric([route, service], _cumulative(mirror.buckets), mirror.latency_sum)
        yield requests
        yield latency
        yield weights
        yield copies
        yield copy_latency
        yield from _strangler_families(self.book)


def _strangler_families(book: TrafficBook) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    from edgeway.gateway.traffic.strangler import STATUSES

    percent = GaugeMetricFamily(
        "edgeway_strangler_percent",
        "The new side's share of a strangler route's requests in force (percent), by route.",
        labels=("route",),
    )
    step = GaugeMetricFamily(
        "edgeway_strangler_step",
        "A strangler rule's step (1 the first, 0 before it), by route.",
        labels=("route",),
    )
    status = GaugeMetricFamily(
        "edgeway_strangler_status",
        "1 for a strangler rule's status (running, paused, rolled_back, complete), 0 for the others.",
        labels=("route", "status"),
    )
    rollbacks = GaugeMetricFamily(
        "edgeway_strangler_rollbacks",
        "Rollbacks of a strangler rule since it started (automatic and by an operator), by route.",
        labels=("route",),
    )
    for route, run in sorted(book.stranglers.items()):
        state = run.state
        percent.add_metric([route], run.percent)
        if state is None:
            continue
        step.add_metric([route], state.step + 1)
        for name in STATUSES:
            status.add_metric([route, name], 1.0 if state.status == name else 0.0)
        rollbacks.add_metric([route], state.rollbacks)
    yield percent
    yield step
    yield status
    yield rollbacks


def _cumulative(buckets: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts as a Prometheus histogram's cumulative ``le`` buckets."""
    out: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip((*BOUNDS, float("inf")), buckets, strict=True):
        seen += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), seen))
    return out
