"""Logs, traces and metrics of sagas, and a saga behind a service-kit endpoint."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel
from saga_helpers import QUICK_COMPENSATION, open_db

from edgeway.observability.ids import new_traceparent, parse_traceparent
from edgeway.observability.logs import JsonFormatter, request_context
from edgeway.observability.metrics import Metrics
from edgeway.saga import Saga, SagaNotFoundError, SagaStatus, StepContext, StepFailed
from edgeway.service import Problem, ServiceSettings, create_app


class Order(BaseModel):
    order_id: str
    fail: bool = False


def traced_saga(seen: list[StepContext[Order]]) -> Saga[Order]:
    saga = Saga("traced", Order)
    steps_log = logging.getLogger("orders.steps")

    async def undo(ctx: StepContext[Order]) -> None:
        seen.append(ctx)

    @saga.step("reserve", compensate=undo, timeout=2)
    async def reserve(ctx: StepContext[Order]) -> None:
        seen.append(ctx)
        steps_log.info("reserving for %s", ctx.data.order_id)

    @saga.step("charge", timeout=2)
    async def charge(ctx: StepContext[Order]) -> None:
        seen.append(ctx)
        if ctx.data.fail:
            raise StepFailed("declined")

    return saga


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("orders"))
    loggers = [logging.getLogger(name) for name in ("edgeway.saga", "orders.steps")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    yield stream
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_log_lines_and_step_headers_carry_the_saga_and_the_starters_request_and_trace(
    tmp_path: Path, json_lines: io.StringIO
) -> None:
    seen: list[StepContext[Order]] = []
    starter = new_traceparent()
    trace_id = starter.trace_id.decode()
    async with open_db("sqlite", tmp_path) as db, db.orchestrator([traced_saga(seen)]) as orchestrator:
        with request_context("req-42", trace_id, starter.parent_id.decode()):
            saga_id = await orchestrator.run("traced", Order(order_id="o-1"))
        state = await orchestrator.wait(saga_id, timeout=10)

    assert state.request_id == "req-42"
    entries = [orjson.loads(line) for line in json_lines.getvalue().splitlines()]
    ours = [e for e in entries if e.get("saga_id") == saga_id]
    assert [e["message"] for e in ours] == [
        f"saga {saga_id} started",
        "step reserve done",
        "step charge done",
        f"saga {saga_id} completed",
    ]
    assert all(e["request_id"] == "req-42" and e["trace_id"] == trace_id for e in ours)
    assert all(e["saga"] == "traced" for e in ours)
    assert [(e.get("step"), e.get("attempt")) for e in ours[1:3]] == [("reserve", 1), ("charge", 1)]

    reserve_ctx = seen[0]
    step_line = next(e for e in entries if e["logger"] == "orders.steps")
    assert step_line["message"] == "reserving for o-1"
    assert (step_line["request_id"], step_line["trace_id"]) == ("req-42", trace_id)
    own = parse_traceparent(reserve_ctx.traceparent.encode())
    assert own is not None
    assert step_line["span_id"] == own.parent_id.decode()  # the step's own span
    assert reserve_ctx.headers == {
        "Idempotency-Key": f"{saga_id}:reserve",
        "X-Request-ID": "req-42",
        "traceparent": reserve_ctx.traceparent,
    }
    assert own.trace_id.decode() == trace_id
    assert seen[1].traceparent != reserve_ctx.traceparent  # one span per step


async def test_with_an_opentelemetry_tracer_each_step_is_a_child_span_of_the_starter(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[StepContext[Order]] = []
    starter = new_traceparent()
    async with (
        open_db("sqlite", tmp_path) as db,
        db.orchestrator([traced_saga(seen)], tracer=provider.get_tracer("test")) as orchestrator,
    ):
        with request_context("req-7", starter.trace_id.decode(), starter.parent_id.decode()):
            saga_id = await orchestrator.run("traced", Order(order_id="o-2", fail=True))
        state = await orchestrator.wait(saga_id, timeout=10)

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == [
        "saga traced reserve",
        "saga traced charge",
        "saga traced reserve compensate",
    ]
    stored = parse_traceparent((state.traceparent or "").encode())
    assert stored is not None
    for span in spans:
        assert format(span.context.trace_id, "032x") == starter.trace_id.decode()
        assert span.parent is not None
        assert format(span.parent.span_id, "016x") == stored.parent_id.decode()
    assert [format(s.context.span_id, "016x") for s in spans] == [
        (parse_traceparent(c.traceparent.encode()) or starter).parent_id.decode() for c in seen
    ]
    provider.shutdown()


async def test_counters_count_started_completed_compensated_and_failed_sagas(tmp_path: Path) -> None:
    metrics = Metrics("orders")
    saga = Saga("counted", Order)

    async def undo(ctx: StepContext[Order]) -> None:
        if ctx.data.order_id == "broken":
            raise StepFailed("cannot undo")

    @saga.step("only", compensate=undo, timeout=2, compensation_retry=QUICK_COMPENSATION)
    async def only(ctx: StepContext[Order]) -> None:
        if ctx.data.fail:
            raise StepFailed("no")

    async with open_db("sqlite", tmp_path) as db, db.orchestrator([saga], metrics=metrics) as orchestrator:
        for order in (Order(order_id="a"), Order(order_id="b"), Order(order_id="c", fail=True)):
            await orchestrator.wait(await orchestrator.run("counted", order), timeout=10)
        await orchestrator.wait(
            await orchestrator.run("counted", Order(order_id="broken", fail=True)), timeout=10
        )

    def value(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"saga": "counted"})

    assert value("edgeway_sagas_started_total") == 4
    assert value("edgeway_sagas_completed_total") == 2
    assert value("edgeway_sagas_compensated_total") == 1
    assert value("edgeway_sagas_failed_total") == 1
    assert metrics.registry.get_sample_value("edgeway_sagas_in_progress") == 0
    body, _ = metrics.exposition()
    assert b"edgeway_saga_step_duration_seconds_bucket" in body


async def test_a_saga_started_by_a_request_keeps_its_request_id_and_its_state_is_served(
    tmp_path: Path,
) -> None:
    seen: list[StepContext[Order]] = []
    async with open_db("sqlite", tmp_path) as db:
        orchestrator = db.orchestrator([traced_saga(seen)])

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with orchestrator:
                yield

        app = create_app(
            "orders", settings=ServiceSettings(shutdown_grace=0), lifespan=lifespan, configure_logging=False
        )

        @app.post("/orders/{order_id}", status_code=202)
        async def place(order_id: str) -> dict[str, str]:
            saga_id = await orchestrator.run("traced", Order(order_id=order_id), saga_id=f"order-{order_id}")
            return {"saga_id": saga_id}

        @app.get("/orders/{order_id}/saga")
        async def saga_state(order_id: str) -> dict[str, Any]:
            try:
                state = await orchestrator.get(f"order-{order_id}")
            except SagaNotFoundError as exc:
                raise Problem(404, f"no order {order_id}") from exc
            return state.model_dump(mode="json")

        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orders") as http,
        ):
            placed = await http.post("/orders/o-9", headers={"X-Request-ID": "checkout-1"})
            again = await http.post("/orders/o-9")  # idempotent: same saga, not a second one
            await orchestrator.wait("order-o-9", timeout=10)
            shown = await http.get("/orders/o-9/saga")
            missing = await http.get("/orders/nope/saga")

    assert placed.status_code == 202
    assert placed.json() == again.json() == {"saga_id": "order-o-9"}
    body = shown.json()
    assert body["status"] == SagaStatus.COMPLETED.value
    assert body["request_id"] == "checkout-1"
    assert [s["name"] for s in body["steps"]] == ["reserve", "charge"]
    assert [c.request_id for c in seen] == ["checkout-1", "checkout-1"]
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
