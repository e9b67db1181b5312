"""Config of the gateway's telemetry: its metrics (on by default, served on the admin port's
``/metrics``) and its OpenTelemetry traces (off by default; they need the ``tracing`` extra)."""

from __future__ import annotations

from pydantic import Field

from edgeway.gateway.config.base import StrictModel
from edgeway.gateway.config.units import Duration


class MetricsSettings(StrictModel):
    """Request, upstream and connection metrics (docs/observability.md, "Gateway metrics")."""

    enabled: bool = Field(
        True,
        description="Count requests, upstream attempts and latencies per route, service and instance. "
        "Off: those families are not exported (the filters' own counters still are).",
    )


class TracingSettings(StrictModel):
    """OpenTelemetry spans: one SERVER span per request, a CLIENT span per upstream attempt, an
    INTERNAL span per aggregate or endpoint call; exported by OTLP over HTTP."""

    enabled: bool = Field(False, description="Record and export spans (needs the `tracing` extra).")
    sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded (by trace id, as OpenTelemetry's TraceIdRatioBased). "
        "`0` records none.",
    )
    parent_based: bool = Field(
        True,
        description="A request whose `traceparent` carries a sampling decision follows it (sampled "
        "flag set: recorded; not set: not recorded); `false` applies `sample_ratio` to every trace.",
    )
    endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL, e.g. `http://otel-collector:4318/v1/traces`. Unset: "
        "`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`); with "
        "none, spans are recorded but not exported (a warning at start).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers sent with every export (e.g. `authorization`). Unset: "
        "`OTEL_EXPORTER_OTLP_HEADERS`.",
    )
    timeout: Duration = Field(10.0, gt=0, description="Time one export may take.")
    service_name: str | None = Field(
        None, description="The resource's `service.name`; unset: the gateway's `name`."
    )


class TelemetrySettings(StrictModel):
    """The gateway's metrics and traces."""

    metrics: MetricsSettings = Field(default_factory=MetricsSettings, description="Prometheus metrics.")
    tracing: TracingSettings = Field(default_factory=TracingSettings, description="OpenTelemetry spans.")
