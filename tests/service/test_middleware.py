from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from fastapi import FastAPI
from servers import serve

from edgeway.observability.logs import current_request_id, current_trace_id
from edgeway.service import ServiceSettings, create_app

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def make_app() -> FastAPI:
    app = create_app("orders", settings=ServiceSettings(), configure_logging=False)

    @app.get("/orders/{order_id}")
    async def get_order(order_id: int) -> dict[str, str | int | None]:
        return {"id": order_id, "request_id": current_request_id(), "trace_id": current_trace_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise LookupError("internal detail that must not leak")

    return app


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with serve(make_app()) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def test_well_formed_request_id_is_kept_and_echoed(http: httpx.AsyncClient) -> None:
    response = await http.get("/orders/1", headers={"X-Request-ID": "client-id-123"})
    assert response.headers["x-request-id"] == "client-id-123"
    assert response.json()["request_id"] == "client-id-123"


@pytest.mark.parametrize("bad", ["has space", "x" * 129, 'quote"inside', ""])
async def test_malformed_request_id_is_replaced(http: httpx.AsyncClient, bad: str) -> None:
    response = await http.get("/orders/1", headers={"X-Request-ID": bad})
    new = response.headers["x-request-id"]
    assert new != bad
    assert len(new) == 32
    assert response.json()["request_id"] == new


async def test_missing_request_id_is_created(http: httpx.AsyncClient) -> None:
    response = await http.get("/orders/1")
    assert len(response.headers["x-request-id"]) == 32


async def test_incoming_traceparent_is_continued_with_a_new_span(http: httpx.AsyncClient) -> None:
    response = await http.get("/orders/1", headers={"traceparent": INCOMING})
    version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
    assert span_id != "00f067aa0ba902b7"
    assert response.json()["trace_id"] == TRACE_ID


async def test_malformed_traceparent_starts_a_new_trace(http: httpx.AsyncClient) -> None:
    response = await http.get("/orders/1", headers={"traceparent": "00-zzzz-00f067aa0ba902b7-01"})
    trace_id = response.headers["traceparent"].split("-")[1]
    assert trace_id != TRACE_ID
    assert len(trace_id) == 32


async def test_unhandled_error_is_a_problem_500_with_the_request_id(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="edgeway.service"):
        response = await http.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "boom-1"
    body = response.json()
    assert body["request_id"] == "boom-1"
    assert "internal detail" not in response.text
    assert any(r.exc_info and r.exc_info[0] is LookupError for r in caplog.records)


async def test_not_found_and_validation_errors_are_problem_json(http: httpx.AsyncClient) -> None:
    missing = await http.get("/nowhere")
    invalid = await http.get("/orders/not-a-number")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["title"] == "Not Found"
    assert invalid.status_code == 422
    assert invalid.json()["errors"][0]["loc"] == ["path", "order_id"]


async def test_metrics_count_requests_by_route_template(http: httpx.AsyncClient) -> None:
    for order_id in (1, 2, 3):
        await http.get(f"/orders/{order_id}")
    await http.get("/nowhere")
    text = (await http.get("/metrics")).text
    assert 'http_server_requests_total{method="GET",route="/orders/{order_id}",status="200"} 3.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "http_server_request_duration_seconds_bucket" in text
    assert "/orders/1" not in text


async def test_access_log_line_carries_the_request_id(
    http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="edgeway.access"):
        await http.get("/orders/7", headers={"X-Request-ID": "acc-1"})
    [record] = [r for r in caplog.records if r.name == "edgeway.access"]
    assert record.getMessage() == "GET /orders/7 200"
    assert record.__dict__["route"] == "/orders/{order_id}"
    assert record.__dict__["status"] == 200
    assert orjson.dumps(record.__dict__["duration_ms"])


async def test_probes_scrapes_and_named_poll_paths_are_access_logged_at_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(
        "feeds", settings=ServiceSettings(), configure_logging=False, quiet_paths=["/revocations"]
    )

    @app.get("/revocations")
    async def feed() -> dict[str, list[str]]:
        return {"entries": []}

    @app.get("/other")
    async def other() -> dict[str, str]:
        return {}

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        with caplog.at_level(logging.DEBUG, logger="edgeway.access"):
            for path in ("/revocations", "/health/ready", "/metrics", "/other"):
                assert (await http.get(path)).status_code == 200
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "edgeway.access"]
    assert logged == [
        ("DEBUG", "GET /revocations 200"),
        ("DEBUG", "GET /health/ready 200"),
        ("DEBUG", "GET /metrics 200"),
        ("INFO", "GET /other 200"),
    ]
