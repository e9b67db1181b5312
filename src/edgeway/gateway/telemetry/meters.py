"""What the gateway counts per request, on its hot path: plain counters, bound once per route,
service and instance, rendered into Prometheus families only when ``/metrics`` is scraped
(:mod:`edgeway.gateway.telemetry.metrics`).

Compiled with the hot path (pyproject.toml). A request costs one list increment and one
histogram bucket per route, service and instance, with no label lookup and no lock:
prometheus_client's own children take a lock per increment and a method call per level, which
a gateway that serves from one event-loop thread does not need. The numbers are read, never
written, from the scrape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from edgeway.gateway.upstream.resilient import Refused
from edgeway.http.errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from edgeway.gateway.upstream.call import UpstreamCall
    from edgeway.gateway.upstream.clusters import Endpoint
    from edgeway.http.exchange import Exchange
    from edgeway.observability.ids import TraceParent

__all__ = [
    "BOUNDS",
    "OUTCOMES",
    "CallTracing",
    "Histogram",
    "InstanceMeter",
    "MethodMeter",
    "RequestTracing",
    "RouteMeter",
    "ServiceMeter",
    "outcome_index",
]

# Seconds; the service kit's buckets (edgeway.observability.metrics.LATENCY_BUCKETS), so one
# dashboard query reads both.
BOUNDS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# The ``outcome`` of an upstream attempt or call: the status class answered, or why none was.
OUTCOMES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "error", "refused", "aborted")
_TIMEOUT: Final = 5
_ERROR: Final = 6
_REFUSED: Final = 7
_ABORTED: Final = 8


class CallTracing(Protocol):
    """The spans of one upstream call (:class:`edgeway.gateway.telemetry.tracing.CallTrace`),
    as the call sees them."""

    def attempt(self, call: UpstreamCall, ep: Endpoint) -> bytes:
        """Start an attempt's span; the ``traceparent`` its request carries."""

    def attempt_over(self, outcome: int | BaseException) -> None: ...

    def call_over(self, outcome: int | BaseException) -> None: ...


class RequestTracing(Protocol):
    """The gateway's tracer (:class:`edgeway.gateway.telemetry.tracing.GatewayTracer`), as the
    runtime and the actions see it (a protocol: the hot path does not import OpenTelemetry)."""

    def begin(self, ex: Exchange, incoming: TraceParent | None, own: TraceParent) -> TraceParent: ...

    def end(self, ex: Exchange, route_id: str | None, tp: TraceParent) -> None: ...

    def call(self, parent: TraceParent, service: str, name: str | None = None) -> CallTracing | None: ...


def outcome_index(outcome: int | BaseException) -> int:
    """The index in :data:`OUTCOMES` of what ended an attempt or a call: a status, 0 (nothing
    answered: the caller gave up), or the exception."""
    if isinstance(outcome, int):
        klass = outcome // 100
        return klass - 1 if 1 <= klass <= 5 else _ABORTED
    if isinstance(outcome, Refused):
        return _REFUSED
    if isinstance(outcome, UpstreamTimeout):
        return _TIMEOUT
    if isinstance(outcome, UpstreamError):
        return _ERROR
    return _ABORTED  # the client went away, the call was cancelled


def _nothing() -> None:
    pass


class Histogram:
    """Observations per bucket of :data:`BOUNDS` (not cumulative: the scrape adds them up) and
    their sum.

    One native int per bucket, bumped from an unrolled chain of comparisons: compiled, an
    observation is a few C double comparisons and one increment in the object's struct. A list
    of counts costs a boxed read, add and write per observation; bisect.bisect_left a Python
    call (~1,300 instructions); a loop over BOUNDS rebuilds the tuple constant on each call.
    tests/gateway/test_gateway_meters.py holds the chain to BOUNDS.
    """

    __slots__ = (
        "b0",
        "b1",
        "b2",
        "b3",
        "b4",
        "b5",
        "b6",
        "b7",
        "b8",
        "b9",
        "b10",
        "b11",
        "b12",
        "inf",
        "sum",
    )

    def __init__(self) -> None:
        self.b0 = self.b1 = self.b2 = self.b3 = self.b4 = self.b5 = self.b6 = 0
        self.b7 = self.b8 = self.b9 = self.b10 = self.b11 = self.b12 = self.inf = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        if seconds <= 0.01:
            if seconds <= 0.001:
                self.b0 += 1
            elif seconds <= 0.0025:
                self.b1 += 1
            elif seconds <= 0.005:
                self.b2 += 1
            else:
                self.b3 += 1
        elif seconds <= 0.25:
            if seconds <= 0.025:
                self.b4 += 1
            elif seconds <= 0.05:
                self.b5 += 1
            elif seconds <= 0.1:
                self.b6 += 1
            else:
                self.b7 += 1
        elif seconds <= 0.5:
            self.b8 += 1
        elif seconds <= 1.0:
            self.b9 += 1
        elif seconds <= 2.5:
            self.b10 += 1
        elif seconds <= 5.0:
            self.b11 += 1
        elif seconds <= 10.0:
            self.b12 += 1
        else:
            self.inf += 1

    @property
    def buckets(self) -> list[int]:
        """Observations per bucket, in the order of :data:`BOUNDS`, +Inf last."""
        return [
            self.b0, self.b1, self.b2, self.b3, self.b4, self.b5, self.b6,
            self.b7, self.b8, self.b9, self.b10, self.b11, self.b12, self.inf,
        ]  # fmt: skip

    @property
    def count(self) -> int:
        return sum(self.buckets)


# Statuses are counted in a list indexed by ``status - 100``; anything outside 100..599 (no
# status: nothing was answered) in the last slot, exported as status "0".
_STATUSES: Final = 500


class MethodMeter:
    """One route's requests with one method: their count by status and their latency."""

    __slots__ = ("counts", "latency", "method", "name")

    def __init__(self, method: bytes) -> None:
        self.method = method
        self.name = method.decode("latin-1")
        self.counts: list[int] = [0] * (_STATUSES + 1)
        self.latency = Histogram()

    def statuses(self) -> list[tuple[int, int]]:
        """(status, requests) for every status seen, in order."""
        found = [(i + 100, n) for i, n in enumerate(self.counts[:_STATUSES]) if n]
        if self.counts[_STATUSES]:
            found.append((0, self.counts[_STATUSES]))
        return found


class RouteMeter:
    """One route's requests, by method (the parser admits registered methods only, so the
    set is bounded) and status, and their latency."""

    __slots__ = ("last", "methods", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self.methods: dict[bytes, MethodMeter] = {}
        # The method of the last request: a route's requests mostly share one, and comparing
        # three bytes costs less than hashing them for the dict.
        self.last: MethodMeter | None = None

    def record(self, method: bytes, status: int, seconds: float) -> None:
        meter = self.last
        if meter is None or meter.method != method:
            meter = self.methods.get(method)
            if meter is None:
                meter = self.methods[method] = MethodMeter(method)
            self.last = meter
        i = status - 100
        if not 0 <= i < _STATUSES:
            i = _STATUSES
        counts = meter.counts
        counts[i] = counts[i] + 1
        meter.latency.observe(seconds)


class InstanceMeter:
    """One instance's attempts by outcome and their latency (from the attempt's start to the
    end of its answer, or to its failure)."""

    __slots__ = ("instance", "latency", "outcomes")

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.outcomes: list[int] = [0] * len(OUTCOMES)
        self.latency = Histogram()


class ServiceMeter:
    """One service's calls (every attempt included) by outcome and their latency, and its
    instances' attempts. Shared by every route and call that reaches the service."""

    __slots__ = ("instances", "latency", "outcomes", "retried", "service", "tunnels")

    def __init__(self, service: str) -> None:
        self.service = service
        self.outcomes: list[int] = [0] * len(OUTCOMES)
        self.latency = Histogram()
        self.instances: dict[str, InstanceMeter] = {}
        self.tunnels = 0  # proxied WebSocket connections open now
        # Counts a pooled connection found closed and retried on a fresh one (the resilience
        # layer's edgeway_upstream_retries_total, reason "stale"): rare, so a plain call.
        self.retried: Callable[[], None] = _nothing

    def instance(self, label: str) -> InstanceMeter:
        meter = self.instances.get(label)
        if meter is None:
            meter = self.instances[label] = InstanceMeter(label)
        return meter

    def attempt(self, label: str, outcome: int | BaseException, seconds: float) -> None:
        """One attempt on instance ``label`` ended with ``outcome`` after ``seconds``."""
        meter = self.instance(label)
        outcomes = meter.outcomes
        i = outcome_index(outcome)
        outcomes[i] = outcomes[i] + 1
        meter.latency.observe(seconds)

    def call(self, outcome: int | BaseException, seconds: float) -> None:
        outcomes = self.outcomes
        i = outcome_index(outcome)
        outcomes[i] = outcomes[i] + 1
        self.latency.observe(seconds)

    def forget(self, label: str) -> None:
        """An instance left the service (discovery): its series go."""
        self.instances.pop(label, None)
