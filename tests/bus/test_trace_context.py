"""Trace context on events: the headers on every broker, the producer and consumer spans, the log
context a handler runs in, and what happens to malformed trace headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from edgeway.bus.bus import EventBus, Received
from edgeway.bus.events import Event
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.transport import ChannelConfig
from edgeway.observability.ids import parse_traceparent
from edgeway.observability.logs import current_request_id, current_span_id, current_trace_id, request_context

from .conftest import BrokerUnderTest
from .helpers import eventually, order_events

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


@pytest.fixture
def spans() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def _log_context() -> tuple[str | None, str | None, str | None]:
    return current_request_id(), current_trace_id(), current_span_id()


async def test_on_every_broker_the_consumer_span_is_a_child_of_the_producer_span(
    broker: BrokerUnderTest, unique: Callable[[str], str], spans: tuple[Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    placed, _ = order_events(unique("orders"))
    seen: list[tuple[Received, tuple[str | None, str | None, str | None]]] = []
    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel)], tracer=tracer)

    async def handle(event: Event, ctx: Received) -> None:
        seen.append((ctx, _log_context()))

    bus.add_handler(placed, handle, group="billing")
    async with bus:
        with request_context("req-1", TRACE_ID, SPAN_ID):
            # no OpenTelemetry span is current: the bound ids are the hop (a gateway-only install)
            sent = await bus.publish(placed(order_id="o-1"), headers={"tracestate": "acme=t61rcWkgMzE"})
        await eventually(lambda: len(seen) == 1, what="the delivery")

    [(ctx, (request_id, trace_id, span_id))] = seen
    assert ctx.request_id == request_id == "req-1"
    assert ctx.tracestate == "acme=t61rcWkgMzE"
    assert ctx.traceparent == sent.traceparent
    finished = {s.name: s for s in exporter.get_finished_spans()}
    producer = finished[f"publish {placed.channel}"]
    consumer = finished[f"process {placed.channel}"]
    assert producer.kind is SpanKind.PRODUCER
    assert consumer.kind is SpanKind.CONSUMER
    assert producer.parent is not None
    assert format(producer.parent.span_id, "016x") == SPAN_ID
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert format(consumer.context.trace_id, "032x") == trace_id == TRACE_ID
    assert format(consumer.context.span_id, "016x") == span_id  # the handler's logs name its span
    assert consumer.context.trace_state.get("acme") == "t61rcWkgMzE"
    attributes = consumer.attributes or {}
    assert attributes["messaging.system"] == bus.transport.name
    assert attributes["messaging.consumer.group.name"] == "billing"
    assert attributes["messaging.message.id"] == sent.id
    assert attributes["edgeway.request_id"] == "req-1"


async def test_without_a_tracer_a_handler_still_logs_and_publishes_in_the_events_trace(
    unique: Callable[[str], str],
) -> None:
    placed, cancelled = order_events(unique("orders"))
    seen: dict[str, Any] = {}
    bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)])

    async def on_placed(event: Event, ctx: Received) -> None:
        seen["placed"] = _log_context()
        seen["caused"] = await bus.publish(cancelled(order_id="o-1"))

    async def on_cancelled(event: Event, ctx: Received) -> None:
        seen["cancelled"] = ctx

    bus.add_handler(placed, on_placed, group="a")
    bus.add_handler(cancelled, on_cancelled, group="a")
    async with bus:
        with request_context("req-2", TRACE_ID, SPAN_ID):
            await bus.publish(placed(order_id="o-1"))
        await eventually(lambda: "cancelled" in seen, what="the caused event")

    request_id, trace_id, span_id = seen["placed"]
    assert (request_id, trace_id) == ("req-2", TRACE_ID)
    assert span_id not in (None, SPAN_ID)  # the handler's own hop
    caused = parse_traceparent(seen["caused"].traceparent.encode())
    assert caused is not None
    assert (caused.trace_id.decode(), caused.parent_id.decode()) == (TRACE_ID, span_id)
    assert seen["cancelled"].request_id == "req-2"


async def test_an_event_that_came_without_a_request_id_gets_one_for_its_handler(
    unique: Callable[[str], str],
) -> None:
    placed, _ = order_events(unique("orders"))
    seen: list[tuple[str | None, str | None, str | None]] = []
    transport = MemoryTransport()
    bus = EventBus(transport, channels=[ChannelConfig(placed.channel)])

    async def handle(event: Event) -> None:
        seen.append(_log_context())

    bus.add_handler(placed, handle, group="a")
    async with bus:
        # as a publisher that knows nothing of edgeway would send it: no trace headers at all
        envelope = await bus.publish(placed(order_id="o-1"))
        bare = type(envelope)(
            "bare-1", envelope.type, envelope.channel, envelope.time, envelope.payload, envelope.key, {}
        )
        await bus.publish_envelope(bare)
        await eventually(lambda: len(seen) == 2, what="both deliveries")
    request_id, trace_id, span_id = seen[1]
    assert request_id is not None
    assert len(request_id) == 32
    assert trace_id is not None
    assert span_id is not None


async def test_malformed_trace_headers_given_to_publish_are_replaced_by_the_context(
    unique: Callable[[str], str],
) -> None:
    placed, _ = order_events(unique("orders"))
    bus = EventBus(MemoryTransport(), channels=[ChannelConfig(placed.channel)])
    async with bus:
        with request_context("req-3", TRACE_ID, SPAN_ID):
            sent = await bus.publish(
                placed(order_id="o-1"),
                headers={
                    "x-request-id": "no spaces\nor newlines",
                    "traceparent": "00-garbage",
                    "tracestate": "Upper=case,not valid",
                    "x-tenant": "acme",
                },
            )
    assert sent.request_id == "req-3"
    assert sent.traceparent == f"00-{TRACE_ID}-{SPAN_ID}-01"
    assert sent.tracestate is None
    assert sent.headers["x-tenant"] == "acme"


async def test_a_batch_handler_runs_in_one_span_linked_to_each_events_context(
    unique: Callable[[str], str], spans: tuple[Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    placed, _ = order_events(unique("orders"))
    got: list[int] = []
    transport = MemoryTransport()
    config = ChannelConfig(placed.channel)
    parents = []
    async with EventBus(transport, channels=[config]) as publisher:
        await transport.declare(config)
        await transport.declare_group(config, "bulk")  # keeps them for the group: one batch
        for n in range(3):
            with request_context(f"req-{n}", f"{n + 1:032x}", SPAN_ID):
                parents.append(await publisher.publish(placed(order_id=f"o{n}")))
    bus = EventBus(transport, channels=[config], tracer=tracer)

    async def handle(events: list[Event]) -> None:
        got.append(len(events))

    bus.add_handler(placed, handle, group="bulk", batch=True)
    async with bus:
        await eventually(lambda: sum(got) == 3, what="the batch")
    [batch] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert batch.parent is None
    assert {link.context.trace_id for link in batch.links} == {n + 1 for n in range(3)}
    linked = {(link.attributes or {}).get("messaging.message.id") for link in batch.links}
    assert linked == {e.id for e in parents}
