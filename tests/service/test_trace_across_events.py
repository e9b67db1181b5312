"""One trace from an HTTP request through the outbox, a real broker and a consumer, and through
a saga's steps and the calls they make: one trace shows a checkout from the browser request to
the e-mail.

Three kit services on real sockets (uvicorn), one process: ``orders`` takes ``POST /orders/{id}``
with a caller's ``traceparent``, ``tracestate`` and ``X-Request-ID``, writes an order event to its
outbox and starts a saga in the same transaction; the saga's ``reserve`` step calls ``stock``
over HTTP, its ``confirm`` step writes a second event to the outbox. ``notifications`` consumes
both events from NATS JetStream (the system server on 4222, streams of the test's own prefix) or
RabbitMQ. Every service records its spans in one in-memory exporter.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI, Request
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pydantic import BaseModel
from servers import serve
from sqlalchemy import Column, MetaData, String, Table, select

from conftest import bound_socket, delete_nats_streams, require
from edgeway.bus.events import Event
from edgeway.bus.rabbit import RabbitTransport
from edgeway.bus.transport import ChannelConfig
from edgeway.observability.logs import JsonFormatter, current_request_id, current_span_id, current_trace_id
from edgeway.observability.tracing import Tracing
from edgeway.saga import OrchestratorConfig, Saga, SagaOrchestrator, StepContext
from edgeway.service import Service, ServiceSettings, create_app

pytestmark = pytest.mark.xdist_group("trace-across-events")

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACESTATE = "vendor=opaque-1,other=x"
REQUEST_ID = "checkout-42"


class OrderPlaced(Event):
    channel = "orders"
    event_type = "orders.placed.v1"
    order_id: str


class OrderConfirmed(Event):
    channel = "orders"
    event_type = "orders.confirmed.v1"
    order_id: str


class OrderData(BaseModel):
    order_id: str


class Seen:
    """What the consumer saw while handling each event: the envelope and its log context."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}

    def record(self, kind: str, ctx: Any) -> None:
        self.events[kind] = {
            "request_id": ctx.request_id,
            "traceparent": ctx.traceparent,
            "tracestate": ctx.tracestate,
            "log_request_id": current_request_id(),
            "log_trace_id": current_trace_id(),
            "log_span_id": current_span_id(),
        }


def tracing(service: str, exporter: InMemorySpanExporter) -> Tracing:
    return Tracing(service, processor=SimpleSpanProcessor(exporter), environ={})


def orders_service(
    settings: ServiceSettings, exporter: InMemorySpanExporter
) -> tuple[Service, FastAPI, SagaOrchestrator]:
    metadata = MetaData()
    orders = Table("orders", metadata, Column("id", String(64), primary_key=True))
    service = Service(
        "orders", metadata, settings, channels=[ChannelConfig("orders")], tracing=tracing("orders", exporter)
    )
    saga: Saga[OrderData] = Saga("place", OrderData)

    @saga.step("reserve", timeout=5)
    async def reserve(ctx: StepContext[OrderData]) -> None:
        response = await service.kit.client("stock").post(
            "/reservations", json={"order_id": ctx.data.order_id}, headers=ctx.headers
        )
        response.raise_for_status()

    @saga.step("confirm", timeout=5)
    async def confirm(ctx: StepContext[OrderData]) -> None:
        async with service.transaction() as session:
            await service.outbox.add(session, OrderConfirmed(order_id=ctx.data.order_id))

    orchestrator = SagaOrchestrator(
        service.db.engine,
        [saga],
        metadata=metadata,
        config=OrchestratorConfig(poll_interval=0.1),
        tracer=service.tracing.tracer,
    )
    service.on_startup(orchestrator.start)
    service.on_shutdown(orchestrator.stop)
    app = service.create_app()

    @app.post("/orders/{order_id}", status_code=202)
    async def place(order_id: str) -> dict[str, str]:
        async with service.transaction() as session:
            await session.execute(orders.insert().values(id=order_id))
            await service.outbox.add(session, OrderPlaced(order_id=order_id))
            await orchestrator.run("place", OrderData(order_id=order_id), saga_id=order_id, session=session)
        orchestrator.wake()
        return {"order_id": order_id}

    return service, app, orchestrator


def stock_app(exporter: InMemorySpanExporter, seen: list[dict[str, str]]) -> FastAPI:
    app = create_app(
        "stock", settings=ServiceSettings(), tracing=tracing("stock", exporter), configure_logging=False
    )

    @app.post("/reservations", status_code=201)
    async def reserve(request: Request) -> dict[str, str]:
        seen.append(dict(request.headers))
        return {"ok": "reserved"}

    return app


def notifications_service(
    settings: ServiceSettings, exporter: InMemorySpanExporter, seen: Seen
) -> tuple[Service, FastAPI]:
    service = Service(
        "notifications",
        settings=settings,
        channels=[ChannelConfig("orders")],
        tracing=tracing("notifications", exporter),
    )
    mail_log = logging.getLogger("test.notifications")

    @service.bus.subscribe(OrderPlaced, group="notifications-placed")
    async def placed(event: OrderPlaced, ctx: Any) -> None:
        seen.record("placed", ctx)

    @service.bus.subscribe(OrderConfirmed, group="notifications-confirmed")
    async def confirmed(event: OrderConfirmed, ctx: Any) -> None:
        mail_log.info("e-mail sent for %s", event.order_id)
        seen.record("confirmed", ctx)

    return service, service.create_app()


@pytest.fixture
def mail_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("notifications"))
    logger = logging.getLogger("test.notifications")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)


@pytest.fixture(params=["nats", "rabbitmq"])
async def bus_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    require(request.param)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    url = "nats://127.0.0.1:4222" if request.param == "nats" else "amqp://guest:guest@127.0.0.1:5672/"
    yield {"bus_url": url, "bus_prefix": prefix, "shutdown_grace": 0}
    if request.param == "nats":
        await delete_nats_streams(prefix)


async def _until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _one(spans: list[ReadableSpan], name: str, service: str | None = None) -> ReadableSpan:
    found = [
        s
        for s in spans
        if s.name == name and (service is None or s.resource.attributes["service.name"] == service)
    ]
    assert len(found) == 1, (name, [(s.name, s.resource.attributes["service.name"]) for s in spans])
    return found[0]


def _parent_of(span: ReadableSpan) -> int:
    assert span.parent is not None, f"{span.name} has no parent"
    return span.parent.span_id


async def test_one_trace_from_the_request_through_outbox_broker_consumer_and_saga_steps(
    tmp_path: Path, bus_settings: dict[str, Any], mail_lines: io.StringIO
) -> None:
    exporter = InMemorySpanExporter()
    seen = Seen()
    stock_seen: list[dict[str, str]] = []
    stock_sock = bound_socket()
    stock_url = f"http://127.0.0.1:{stock_sock.getsockname()[1]}"
    orders, orders_app, _ = orders_service(
        ServiceSettings(data_dir=tmp_path / "orders", services={"stock": [stock_url]}, **bus_settings),
        exporter,
    )
    notifications, notifications_app = notifications_service(
        ServiceSettings(data_dir=tmp_path / "notifications", **bus_settings), exporter, seen
    )
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(serve(stock_app(exporter, stock_seen), stock_sock))
        await stack.enter_async_context(serve(notifications_app))
        orders_url = await stack.enter_async_context(serve(orders_app))
        async with httpx.AsyncClient(base_url=orders_url) as http:
            response = await http.post(
                f"/orders/{order_id}",
                headers={
                    "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01",
                    "tracestate": TRACESTATE,
                    "X-Request-ID": REQUEST_ID,
                },
            )
        assert response.status_code == 202, response.text
        await _until(lambda: {"placed", "confirmed"} <= set(seen.events), "both events to be consumed")
        async with orders.db.sessions() as session:
            rows = (await session.execute(select(orders.outbox.table))).all()
    for transport in (orders.bus.transport, notifications.bus.transport):
        if isinstance(transport, RabbitTransport):
            await transport.teardown()

    # The consumer saw the caller's request id and trace, in the envelope and in its log context.
    for kind in ("placed", "confirmed"):
        got = seen.events[kind]
        assert got["request_id"] == got["log_request_id"] == REQUEST_ID, kind
        assert got["traceparent"].split("-")[1] == got["log_trace_id"] == TRACE_ID, kind
        assert got["tracestate"] == TRACESTATE, kind
    [mail] = [orjson.loads(line) for line in mail_lines.getvalue().splitlines()]
    assert (mail["request_id"], mail["trace_id"], mail["service"]) == (REQUEST_ID, TRACE_ID, "notifications")
    assert mail["span_id"] == seen.events["confirmed"]["log_span_id"]

    # The outbox kept the request's context in its columns.
    assert len(rows) == 2
    assert {r.request_id for r in rows} == {REQUEST_ID}
    assert {r.traceparent.split("-")[1] for r in rows} == {TRACE_ID}
    assert {r.tracestate for r in rows} == {TRACESTATE}

    # The saga's call to stock carried the context on.
    [call] = stock_seen
    assert call["x-request-id"] == REQUEST_ID
    assert call["traceparent"].split("-")[1] == TRACE_ID
    assert call["tracestate"] == TRACESTATE

    # Every span is in the caller's trace, and they nest as the work did.
    spans = list(exporter.get_finished_spans())
    assert {_hex(s.context.trace_id, 32) for s in spans} == {TRACE_ID}
    request = _one(spans, "POST /orders/{order_id}", "orders")
    assert request.kind is SpanKind.SERVER
    assert _hex(_parent_of(request), 16) == CALLER_SPAN
    reserve = _one(spans, "saga place reserve")
    confirm = _one(spans, "saga place confirm")
    assert _parent_of(reserve) == _parent_of(confirm) == request.context.span_id
    assert reserve.attributes is not None
    assert reserve.attributes["edgeway.request_id"] == REQUEST_ID
    client = _one(spans, "POST stock", "orders")
    assert client.kind is SpanKind.CLIENT
    assert _parent_of(client) == reserve.context.span_id
    served = _one(spans, "POST /reservations", "stock")
    assert _parent_of(served) == client.context.span_id
    creates = [s for s in spans if s.name == "create orders"]
    assert len(creates) == 2
    assert all(s.kind is SpanKind.PRODUCER for s in creates)
    create_parents = {_parent_of(s) for s in creates}
    assert create_parents == {request.context.span_id, confirm.context.span_id}
    processes = [s for s in spans if s.name == "process orders"]
    assert len(processes) == 2
    assert all(
        s.kind is SpanKind.CONSUMER and s.resource.attributes["service.name"] == "notifications"
        for s in processes
    )
    assert {_parent_of(s) for s in processes} == {s.context.span_id for s in creates}
    [confirmed_create] = [c for c in creates if _parent_of(c) == confirm.context.span_id]
    [processed] = [s for s in processes if _parent_of(s) == confirmed_create.context.span_id]
    assert processed.attributes is not None
    assert processed.attributes["messaging.destination.name"] == "orders"
    assert processed.attributes["edgeway.request_id"] == REQUEST_ID
    assert _hex(processed.context.span_id, 16) == seen.events["confirmed"]["log_span_id"]
