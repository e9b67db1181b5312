"""The telemetry of one gateway, as its routes and calls see it: the meters per route and
service (when metrics are on) and the tracer (when tracing is on). One per gateway
(``GatewayEnv.shared``); the meters themselves outlive a live reload in the gateway's metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from edgeway.gateway.core.pipeline import GatewayEnv
from edgeway.gateway.telemetry.meters import CallTracing, RouteMeter, ServiceMeter
from edgeway.gateway.telemetry.metrics import GatewayMeters
from edgeway.gateway.upstream.clusters import Cluster, ClusterChange
from edgeway.observability.ids import TraceParent

if TYPE_CHECKING:
    from edgeway.gateway.telemetry.tracing import GatewayTracer

__all__ = ["GatewayTelemetry", "telemetry_of"]

log = logging.getLogger("edgeway.gateway")


class GatewayTelemetry:
    def __init__(self, env: GatewayEnv) -> None:
        self.env = env
        settings = env.config.telemetry
        self.meters: GatewayMeters | None = None
        if settings.metrics.enabled:
            self.meters = env.metrics.collector("edgeway.gateway.meters", GatewayMeters)
        self.tracer: GatewayTracer | None = None
        if settings.tracing.enabled:
            # Imported only here: the OpenTelemetry SDK is the `tracing` extra, checked at load.
            from edgeway.gateway.telemetry.tracing import GatewayTracer

            self.tracer = GatewayTracer(settings.tracing, env.config.name)
        self._watched: list[Cluster] = []
        for name in env.config.services:
            self.service(name)

    def __repr__(self) -> str:
        return f"<GatewayTelemetry metrics={self.meters is not None} tracing={self.tracer is not None}>"

    def routes(self) -> dict[str | None, RouteMeter] | None:
        """The meter of every route of this config (and of unmatched requests), by route id."""
        meters = self.meters
        if meters is None:
            return None
        found: dict[str | None, RouteMeter] = {None: meters.route(None)}
        for route in self.env.config.routes:
            found[route.id] = meters.route(route.id)
        return found

    def service(self, name: str) -> ServiceMeter | None:
        """The meter of service ``name`` (made once; its instances leave with discovery)."""
        meters = self.meters
        if meters is None:
            return None
        known = name in meters.services
        meter = meters.service(name)
        if not known:
            meter.retried = (
                self.env.metrics.counter(
                    "edgeway_upstream_retries_total",
                    "Upstream calls retried on another instance, by reason (error or status).",
                    ("service", "reason"),
                )
                .labels(name, "stale")
                .inc
            )
        cluster = self.env.clusters.get(name)
        if cluster is not None and cluster not in self._watched:
            self._watched.append(cluster)
            cluster.listeners.append(self._changed)
        return meter

    def meter(self, service: str) -> ServiceMeter | None:
        """The meter of a configured service (None: metrics off)."""
        return self.meters.services.get(service) if self.meters is not None else None

    def call_trace(self, parent: TraceParent, service: str, name: str) -> CallTracing | None:
        """The spans of a named call (an aggregate's, an endpoint's) made for the request whose
        trace context is ``parent``; None when tracing is off or the request is not sampled."""
        tracer = self.tracer
        return tracer.call(parent, service, name) if tracer is not None else None

    def _changed(self, cluster: Cluster, change: ClusterChange) -> None:
        meters = self.meters
        if meters is None:
            return
        meter = meters.services.get(cluster.name)
        if meter is not None:
            for ep in change.removed:
                meter.forget(ep.label)

    async def start(self) -> None:
        tracer = self.tracer
        if tracer is not None and not tracer.exporting:
            log.warning(
                "tracing is on but no exporter is configured: spans are recorded and dropped "
                "(set telemetry.tracing.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)"
            )

    async def stop(self) -> None:
        for cluster in self._watched:
            if self._changed in cluster.listeners:
                cluster.listeners.remove(self._changed)
        self._watched.clear()
        if self.tracer is not None:
            # The last export is a blocking HTTP request: not on the event loop, which a live
            # reload keeps serving while the old config stops.
            await asyncio.to_thread(self.tracer.shutdown)


def telemetry_of(env: GatewayEnv) -> GatewayTelemetry:
    return env.shared("telemetry", lambda: GatewayTelemetry(env))
