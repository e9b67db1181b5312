"""Prometheus metrics for one app: a registry of its own and the standard HTTP server metrics.

Each app gets its own :class:`~prometheus_client.CollectorRegistry` so several apps in one
process (tests, the demo) never collide on metric names. Other packages register their own
counters, gauges and histograms through :meth:`Metrics.counter` and friends, which return the
existing metric when the name is already registered with the same labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

__all__ = ["LATENCY_BUCKETS", "Metrics", "MetricsConflictError"]

# Seconds. Finer at the low end, where a healthy service's requests are.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

M = TypeVar("M", bound=MetricWrapperBase)
C = TypeVar("C", bound=Collector)


class MetricsConflictError(ValueError):
    """A metric name is already registered as a different type or with different labels."""


class Metrics:
    """The metrics of one app; ``exposition()`` renders them for ``/metrics``.

    ``http_server=False``: without the standard HTTP server families (``requests``,
    ``latency``, ``in_flight``), for an app that exports them its own way under the same names
    (the gateway counts them in plain integers: :mod:`edgeway.gateway.telemetry.metrics`).
    """

    requests: Counter
    latency: Histogram
    in_flight: Gauge

    def __init__(
        self, service: str, registry: CollectorRegistry | None = None, *, http_server: bool = True
    ) -> None:
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, MetricWrapperBase] = {}
        self._collectors: dict[str, Collector] = {}
        if http_server:
            self._http_server()

    def _http_server(self) -> None:
        self.requests = self.counter(
            "http_server_requests_total",
            "HTTP requests served, by method, route template and status code.",
            ("method", "route", "status"),
        )
        self.latency = self.histogram(
            "http_server_request_duration_seconds",
            "Time from the request's arrival to the end of the response body.",
            ("method", "route"),
        )
        self.in_flight = self.gauge("http_server_requests_in_flight", "Requests being served now.")

    def _get_or_create(
        self, kind: type[M], name: str, doc: str, labels: Sequence[str], make: Callable[[], M]
    ) -> M:
        existing = self._metrics.get(name)
        if existing is None:
            metric = make()
            self._metrics[name] = metric
            return metric
        if not isinstance(existing, kind) or tuple(existing._labelnames) != tuple(labels):
            raise MetricsConflictError(
                f"metric {name!r} is already registered as {type(existing).__name__} with labels "
                f"{existing._labelnames}; pick another name or the same type and labels"
            )
        return existing

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
        return self._get_or_create(
            Counter, name, doc, labels, lambda: Counter(name, doc, labels, registry=self.registry)
        )

    def gauge(
        self, name: str, doc: str, labels: Sequence[str] = (), *, function: Callable[[], float] | None = None
    ) -> Gauge:
        """A gauge; with ``function`` its value is read at scrape time (e.g. an outbox backlog).
        Asked for again with a function, the gauge reads the new one (a gateway's components are
        replaced on live reload while its metrics carry on)."""

        def make() -> Gauge:
            return Gauge(name, doc, labels, registry=self.registry)

        gauge = self._get_or_create(Gauge, name, doc, labels, make)
        if function is not None:
            gauge.set_function(function)
        return gauge

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (), *, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> Histogram:
        return self._get_or_create(
            Histogram,
            name,
            doc,
            labels,
            lambda: Histogram(name, doc, labels, registry=self.registry, buckets=buckets),
        )

    def collector(self, key: str, factory: Callable[[], C]) -> C:
        """A custom collector (an object with ``collect()``, as prometheus_client's
        ``Collector``) registered once under ``key``: asked for again, the same one. For
        counts kept outside prometheus_client's metric objects (the gateway's per-request
        meters) that must carry on, like the metrics, across a gateway's live reload."""
        found = self._collectors.get(key)
        if found is None:
            found = self._collectors[key] = factory()
            self.registry.register(found)
        return found  # type: ignore[return-value]  # one key, one factory, one type

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
