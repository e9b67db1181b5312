"""The gateway's request and upstream metrics as Prometheus families.

The counting happens in :mod:`edgeway.gateway.telemetry.meters` (plain numbers, bound once per
route, service and instance); :class:`GatewayMeters` is the collector that turns them into
families when ``/metrics`` is scraped. It lives in the gateway's
:class:`~edgeway.observability.metrics.Metrics` (one per gateway name), so a live reload keeps
counting where the running config left off.

The families (docs/observability.md, "Gateway metrics", says what each means):

- ``http_server_requests_total`` (method, route, status) and ``http_server_request_duration_seconds``
  (method, route): the service kit's families, under the same names, so one query reads both;
- ``edgeway_gateway_upstream_calls_total`` (service, outcome) and
  ``..._upstream_call_duration_seconds`` (service): a call, every attempt included;
- ``edgeway_gateway_upstream_attempts_total`` (service, instance, outcome) and
  ``..._upstream_attempt_duration_seconds`` (service, instance);
- ``edgeway_gateway_websocket_tunnels`` (service): proxied WebSocket connections open now.

``route`` is the route's id (its ``id``, or the one derived from its path), never the request
path; ``<unmatched>`` counts requests no route matched (as the kit does). ``outcome`` is the
status class answered, or ``timeout``, ``error`` (no usable answer: connect failure, reset,
protocol error), ``refused`` (the service's guard refused the call: breaker open, concurrency
bound, no instance) or ``aborted`` (the caller gave up: the client went away).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from edgeway.gateway.telemetry.meters import (
    BOUNDS,
    OUTCOMES,
    Histogram,
    RouteMeter,
    ServiceMeter,
)

__all__ = ["UNMATCHED", "GatewayMeters"]

UNMATCHED = "<unmatched>"  # the route label of requests no route matched

_LE = [repr(float(b)) for b in BOUNDS] + ["+Inf"]  # as prometheus_client writes them (0.001, 1.0)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    total = 0
    out: list[tuple[str, float]] = []
    for le, n in zip(_LE, histogram.buckets, strict=True):
        total += n
        out.append((le, float(total)))
    return out


class GatewayMeters(Collector):
    """The meters of one gateway (by name), and the Prometheus collector that exports them."""

    def __init__(self) -> None:
        # None: requests no route matched (404, 405, a bad path).
        self.routes: dict[str | None, RouteMeter] = {None: RouteMeter(UNMATCHED)}
        self.services: dict[str, ServiceMeter] = {}

    def route(self, route_id: str | None) -> RouteMeter:
        meter = self.routes.get(route_id)
        if meter is None:
            meter = self.routes[route_id] = RouteMeter(route_id or UNMATCHED)
        return meter

    def service(self, name: str) -> ServiceMeter:
        meter = self.services.get(name)
        if meter is None:
            meter = self.services[name] = ServiceMeter(name)
        return meter

    # -- the Prometheus collector --------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        requests, latency, calls, call_latency, attempts, attempt_latency, tunnels = self._families()
        for route in list(self.routes.values()):
            for by_method in list(route.methods.values()):
                method = by_method.name
                for status, n in by_method.statuses():
                    requests.add_metric([method, route.route, str(status)], n)
                latency.add_metric([method, route.route], _buckets(by_method.latency), by_method.latency.sum)
        for service in list(self.services.values()):
            name = service.service
            for outcome, n in zip(OUTCOMES, service.outcomes, strict=True):
                if n:
                    calls.add_metric([name, outcome], n)
            if service.latency.count:
                call_latency.add_metric([name], _buckets(service.latency), service.latency.sum)
            tunnels.add_metric([name], service.tunnels)
            for instance in list(service.instances.values()):
                labels = [name, instance.instance]
                for outcome, n in zip(OUTCOMES, instance.outcomes, strict=True):
                    if n:
                        attempts.add_metric([*labels, outcome], n)
                if instance.latency.count:
                    attempt_latency.add_metric(labels, _buckets(instance.latency), instance.latency.sum)
        yield from (requests, latency, calls, call_latency, attempts, attempt_latency, tunnels)

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "http_server_requests",
                "HTTP requests served, by method, route and status code.",
                labels=("method", "route", "status"),
            ),
            HistogramMetricFamily(
                "http_server_request_duration_seconds",
                "Time from the request's arrival to the end of the response body.",
                labels=("method", "route"),
            ),
            CounterMetricFamily(
                "edgeway_gateway_upstream_calls",
                "Calls to a service (every attempt included), by outcome: the status class "
                "answered, or timeout, error, refused, aborted.",
                labels=("service", "outcome"),
            ),
            HistogramMetricFamily(
                "edgeway_gateway_upstream_call_duration_seconds",
                "Time one call to a service took, every attempt and backoff included.",
                labels=("service",),
            ),
            CounterMetricFamily(
                "edgeway_gateway_upstream_attempts",
                "Attempts on one instance of a service, by outcome.",
                labels=("service", "instance", "outcome"),
            ),
            HistogramMetricFamily(
                "edgeway_gateway_upstream_attempt_duration_seconds",
                "Time one attempt took, from its start to the end of its answer (or its failure).",
                labels=("service", "instance"),
            ),
            GaugeMetricFamily(
                "edgeway_gateway_websocket_tunnels",
                "Proxied WebSocket connections open now, by service.",
                labels=("service",),
            ),
        )
