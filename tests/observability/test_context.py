"""The current hop's trace context, and which ``tracestate`` values are passed on."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from edgeway.observability.context import current_hop, parse_tracestate, remote_context
from edgeway.observability.ids import TraceParent
from edgeway.observability.logs import request_context

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
        (" rojo=1 ,\t,congo=2", "rojo=1,congo=2"),  # whitespace and empty members dropped
        ("tenant@vendor=opaque", "tenant@vendor=opaque"),
        ("", None),
        ("Rojo=1", None),  # keys are lower case
        ("rojo=1,rojo=2", None),  # a key appears once
        ("rojo=has,comma", None),
        ("rojo=ends with space ", "rojo=ends with space"),  # trimmed like the list's whitespace
        ("rojo=a\nb", None),
        ("k=" + "v" * 257, None),  # values are at most 256 characters
        (",".join(f"k{i}=v" for i in range(33)), None),  # at most 32 members
        ("k=" + "v" * 250 + "," + ",".join(f"k{i}=" + "v" * 20 for i in range(12)), None),  # > 512
    ],
)
def test_tracestate_is_passed_on_only_when_well_formed(value: str, expected: str | None) -> None:
    assert parse_tracestate(value) == expected


def test_a_malformed_tracestate_is_dropped_without_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    parent = TraceParent(TRACE_ID.encode(), SPAN_ID.encode(), b"01")
    with caplog.at_level(logging.DEBUG):
        context = remote_context(parent, b"BAD KEY=1")
        good = remote_context(parent, b"acme=1")
    assert not caplog.records  # any client can send one: no line per request
    assert trace.get_current_span(context).get_span_context().trace_state.to_header() == ""
    assert trace.get_current_span(good).get_span_context().trace_state.to_header() == "acme=1"


def test_the_hop_is_the_current_span_else_the_bound_log_ids() -> None:
    assert current_hop().traceparent is None
    with request_context("req-1", TRACE_ID, SPAN_ID):
        bound = current_hop()
        tracer = TracerProvider().get_tracer("test")
        parent = TraceParent(TRACE_ID.encode(), SPAN_ID.encode(), b"01")
        with tracer.start_as_current_span("own", context=remote_context(parent, "acme=1")) as span:
            spanned = current_hop()
    assert bound.request_id == spanned.request_id == "req-1"
    assert bound.traceparent == TraceParent(TRACE_ID.encode(), SPAN_ID.encode(), b"01")
    assert bound.tracestate is None
    assert spanned.traceparent is not None
    assert spanned.traceparent.trace_id.decode() == TRACE_ID
    assert int(spanned.traceparent.parent_id, 16) == span.get_span_context().span_id
    assert spanned.tracestate == "acme=1"
