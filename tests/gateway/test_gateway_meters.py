"""The per-request meters on their own: the histogram's bucket is the one Prometheus's ``le``
names, for every bound and the values around it."""

from __future__ import annotations

from bisect import bisect_left

from edgeway.gateway.telemetry.meters import BOUNDS, Histogram, RouteMeter, outcome_index
from edgeway.gateway.upstream.resilient import CircuitOpen
from edgeway.http.errors import UpstreamConnectError, UpstreamTimeout


def test_the_bucket_is_the_first_bound_at_or_above_the_value() -> None:
    values = [0.0, 1e-9, 20.0, 1e9]
    for bound in BOUNDS:
        values += [bound, bound * 0.999, bound * 1.001]
    for value in values:
        histogram = Histogram()
        histogram.observe(value)
        assert histogram.buckets.index(1) == bisect_left(BOUNDS, value), value
        assert histogram.count == 1


def test_a_histogram_counts_per_bucket_and_sums() -> None:
    histogram = Histogram()
    for seconds in (0.0005, 0.001, 0.003, 42.0):
        histogram.observe(seconds)
    assert histogram.buckets[0] == 2
    assert histogram.buckets[2] == 1
    assert histogram.buckets[len(BOUNDS)] == 1
    assert histogram.count == 4
    assert abs(histogram.sum - 42.0045) < 1e-9


def test_a_route_counts_by_method_and_status() -> None:
    route = RouteMeter("api")
    for method, status in [(b"GET", 200), (b"GET", 200), (b"POST", 201), (b"GET", 503), (b"GET", 0)]:
        route.record(method, status, 0.01)
    assert [m.name for m in route.methods.values()] == ["GET", "POST"]
    assert route.methods[b"GET"].statuses() == [(200, 2), (503, 1), (0, 1)]
    assert route.methods[b"POST"].statuses() == [(201, 1)]
    assert route.methods[b"GET"].latency.count == 4


def test_outcomes_name_what_ended_a_call() -> None:
    assert [outcome_index(s) for s in (101, 200, 302, 404, 503, 0)] == [0, 1, 2, 3, 4, 8]
    assert outcome_index(UpstreamTimeout("first_byte", 1.0)) == 5
    assert outcome_index(UpstreamConnectError("refused")) == 6
    assert outcome_index(CircuitOpen("open")) == 7
    assert outcome_index(KeyError("x")) == 8
