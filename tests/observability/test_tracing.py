from __future__ import annotations

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from edgeway.observability.ids import parse_traceparent
from edgeway.observability.logs import request_context
from edgeway.observability.tracing import Tracing, otlp_endpoint, outgoing_traceparent, span_traceparent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


def recording() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing("orders", processor=SimpleSpanProcessor(exporter), environ={}), exporter


def test_server_span_continues_the_incoming_trace() -> None:
    tracing, exporter = recording()
    span = tracing.start_server_span("GET /x", f"00-{TRACE_ID}-{PARENT}-01".encode())
    span.end()
    [finished] = exporter.get_finished_spans()
    assert format(finished.context.trace_id, "032x") == TRACE_ID
    assert finished.parent is not None
    assert format(finished.parent.span_id, "016x") == PARENT
    assert finished.kind is SpanKind.SERVER
    assert finished.resource.attributes["service.name"] == "orders"


def test_malformed_traceparent_starts_a_root_span() -> None:
    tracing, exporter = recording()
    tracing.start_server_span("GET /x", b"garbage").end()
    [finished] = exporter.get_finished_spans()
    assert finished.parent is None


def test_span_traceparent_round_trips_through_the_shared_parser() -> None:
    tracing, _ = recording()
    span = tracing.start_server_span("x", None)
    parsed = parse_traceparent(span_traceparent(span).encode())
    assert parsed is not None
    assert int(parsed.parent_id, 16) == span.get_span_context().span_id


def test_outgoing_traceparent_falls_back_to_the_bound_trace_id() -> None:
    assert outgoing_traceparent() is None
    with request_context("r", TRACE_ID, PARENT):
        value = outgoing_traceparent()
    assert value is not None
    assert value.startswith(f"00-{TRACE_ID}-")
    assert not value.startswith(f"00-{TRACE_ID}-{PARENT}")


def test_exporter_only_when_an_otlp_endpoint_is_set() -> None:
    assert otlp_endpoint({}) is None
    assert otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == "http://collector:4318"
    assert not Tracing("a", environ={}).exporting
    exporting = Tracing("a", environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert exporting.exporting
    exporting.provider.shutdown()
