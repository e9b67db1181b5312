"""The gateway tracer's sampling, decided before the OpenTelemetry SDK is asked: the same
decision as the SDK's sampler for every trace id, a sampled new trace keeping the trace id the
gateway drew, and an unsampled request never reaching ``start_span``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from edgeway.gateway.telemetry.config import TracingSettings
from edgeway.gateway.telemetry.tracing import GatewayTracer
from edgeway.http.exchange import Exchange
from edgeway.observability.ids import TraceParent, new_span_id, new_trace_id


def exchange() -> Exchange:
    """What ``begin`` reads of a request, without a connection."""
    fields: dict[str, Any] = {
        "method": b"GET",
        "path": b"/x",
        "scheme": b"http",
        "host": b"gw",
        "client": "127.0.0.1",
        "request_id": b"r-1",
        "headers": [],
        "started": 0.0,
        "status": 200,
    }
    return cast(Exchange, SimpleNamespace(**fields))


def tracer(ratio: float, *, parent_based: bool = True) -> tuple[GatewayTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    settings = TracingSettings(enabled=True, sample_ratio=ratio, parent_based=parent_based)
    return GatewayTracer(settings, "gw", processor=SimpleSpanProcessor(exporter)), exporter


def test_new_traces_are_sampled_as_the_sdks_ratio_sampler_samples_them_and_keep_their_trace_id() -> None:
    gateway, exporter = tracer(0.5)
    bound = TraceIdRatioBased(0.5).bound
    decisions = []
    for _ in range(400):
        own = TraceParent(new_trace_id(), new_span_id(), b"01")
        tp = gateway.begin(exchange(), None, own)
        expected = int(own.trace_id, 16) & TraceIdRatioBased.TRACE_ID_LIMIT < bound
        assert tp.flags == (b"01" if expected else b"00")
        assert tp.trace_id == own.trace_id  # sampled or not, the trace the gateway drew
        gateway.end(exchange(), "r", tp)
        decisions.append(expected)
    recorded = exporter.get_finished_spans()
    assert len(recorded) == sum(decisions)
    assert 120 < len(recorded) < 280  # about half
    gateway.shutdown()


def test_an_unsampled_request_never_reaches_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway, _ = tracer(0.0)

    def start_span(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an unsampled request asked the SDK for a span")

    monkeypatch.setattr(gateway.tracer, "start_span", start_span)
    own = TraceParent(new_trace_id(), new_span_id(), b"01")
    assert gateway.begin(exchange(), None, own).encode() == own.encode()[:-2] + b"00"
    caller = TraceParent(new_trace_id(), new_span_id(), b"00")
    child = caller.child()
    assert gateway.begin(exchange(), caller, child) is child  # the caller's "no", passed on as it is


@pytest.mark.parametrize(("flags", "parent_based", "ratio", "recorded"), [
    (b"01", True, 0.0, True),  # the caller's flag decides
    (b"00", True, 1.0, False),
    (b"01", False, 0.0, False),  # the ratio decides, even for a sampled caller
    (b"00", False, 1.0, True),
])  # fmt: skip
def test_a_callers_trace_is_sampled_by_its_flag_or_by_the_ratio(
    flags: bytes, parent_based: bool, ratio: float, recorded: bool
) -> None:
    gateway, exporter = tracer(ratio, parent_based=parent_based)
    caller = TraceParent(new_trace_id(), new_span_id(), flags)
    tp = gateway.begin(exchange(), caller, caller.child())
    gateway.end(exchange(), "r", tp)
    assert tp.trace_id == caller.trace_id
    assert tp.flags == (b"01" if recorded else b"00")
    assert len(exporter.get_finished_spans()) == int(recorded)
    gateway.shutdown()
