"""The control room's server without a shop: its OTLP/HTTP receiver fed by the real OpenTelemetry
exporter (protobuf) and by hand-written OTLP/JSON, bad bodies answered with a problem, and the
collector turning spans and access-log lines into traces, calls between nodes and stats."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import SpanKind

from edgeway.demo.control.collector import Collector
from edgeway.demo.control.otlp import OtlpError, decode_export
from edgeway.demo.control.server import ControlRoom, ControlRoomSettings, topology_nodes
from edgeway.observability.tracing import Tracing, span_traceparent


@pytest.fixture
async def room() -> AsyncIterator[ControlRoom]:
    settings = ControlRoomSettings(
        host="127.0.0.1",
        port=0,
        ports={},
        edges=[],
        pattern="direct",
        admin_token="t",
        nats_url="nats://127.0.0.1:1",
        config_bucket="b",
        security_url="http://127.0.0.1:1",
        user=("u", "p"),
        partner=("c", "s"),
    )
    control = ControlRoom(settings, list, {"catalog-1": "catalog", "orders": "orders"})
    await control.start()
    try:
        yield control
    finally:
        await control.stop()


async def test_spans_exported_by_the_sdk_arrive_as_one_trace_with_parents(room: ControlRoom) -> None:
    orders = Tracing("orders", exporter=OTLPSpanExporter(endpoint=f"{room.url}/v1/traces"))
    catalog = Tracing("catalog", exporter=OTLPSpanExporter(endpoint=f"{room.url}/v1/traces"))
    server = orders.start_server_span("POST /orders", None)
    server.set_attribute("http.response.status_code", 201)
    call = orders.tracer.start_span(
        "GET catalog",
        context=_context_of(server),
        kind=SpanKind.CLIENT,
        attributes={"peer.service": "catalog"},
    )
    remote = catalog.start_server_span("GET /products/{sku}", span_traceparent(call).encode())
    remote.set_attribute("http.response.status_code", 503)
    remote.end()
    call.end()
    server.end()
    # Flushing POSTs to the receiver, which runs on this loop: the exporter waits in a thread.
    await asyncio.to_thread(orders.shutdown)
    await asyncio.to_thread(catalog.shutdown)

    trace_id = format(server.get_span_context().trace_id, "032x")
    async with httpx.AsyncClient(base_url=room.url) as http:
        found = (await http.get(f"/api/traces/{trace_id}")).json()
        state = (await http.get("/api/state")).json()
    rows = [(s["node"], s["name"], s["kind"], s["depth"]) for s in found["spans"]]
    assert rows == [
        ("orders", "POST /orders", "server", 0),
        ("orders", "GET catalog", "client", 1),
        ("catalog", "GET /products/{sku}", "server", 2),
    ]
    assert found["error"] is True  # the catalog answered 503
    links = {(link["source"], link["target"]): link for link in state["links"]}
    assert links[("browser", "orders")]["calls"] == 1  # the request that started the trace
    assert links[("orders", "catalog")] == {**links[("orders", "catalog")], "calls": 1, "errors": 1}
    assert state["received"]["spans"] == 3


def _context_of(span: Any) -> Any:
    from opentelemetry import trace

    return trace.set_span_in_context(span)


def _json_export(trace_id: str = "ab" * 16) -> dict[str, Any]:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "shop-web-bff"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": "cd" * 8,
                                "name": "GET /api/home",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000012000000",
                                "attributes": [
                                    {"key": "http.response.status_code", "value": {"intValue": "200"}},
                                    {"key": "edgeway.route", "value": {"stringValue": "home"}},
                                ],
                                "events": [{"name": "cache miss"}],
                                "status": {},
                            }
                        ]
                    }
                ],
            }
        ]
    }


async def test_otlp_json_and_gzip_are_accepted(room: ControlRoom) -> None:
    body = orjson.dumps(_json_export())
    async with httpx.AsyncClient(base_url=room.url) as http:
        answer = await http.post("/v1/traces", content=body, headers={"Content-Type": "application/json"})
        assert (answer.status_code, answer.json()) == (200, {})
        zipped = orjson.dumps(_json_export("ef" * 16))
        answer = await http.post(
            "/v1/traces",
            content=gzip.compress(zipped),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert answer.status_code == 200
        found = (await http.get(f"/api/traces/{'ab' * 16}")).json()
    [span] = found["spans"]
    # the edge names itself after its config; the picture calls it by its role
    assert (span["node"], span["status"], span["duration_ms"], span["events"]) == (
        "web-bff",
        200,
        12.0,
        ["cache miss"],
    )
    assert span["attributes"]["edgeway.route"] == "home"
    assert ("ef" * 16) in room.collector.traces


@pytest.mark.parametrize(
    ("body", "headers", "status", "detail"),
    [
        (
            b"\xff\xff\xff",
            {"Content-Type": "application/x-protobuf"},
            400,
            "not an ExportTraceServiceRequest",
        ),
        (b"{not json", {"Content-Type": "application/json"}, 400, "not JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}',
            {"Content-Type": "application/json"},
            400,
            "traceId must be 32 hex digits",
        ),
        (b"{}", {"Content-Type": "text/plain"}, 415, "expected application/x-protobuf"),
        (
            b"abc",
            {"Content-Type": "application/json", "Content-Encoding": "br"},
            415,
            "Content-Encoding 'br'",
        ),
        (
            gzip.compress(b"{}")[:-4],
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            400,
            "truncated",
        ),
        (
            gzip.compress(b" " * (9 * 1024 * 1024)),
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            413,
            "inflates to more than",
        ),
    ],
    ids=["protobuf", "json", "trace-id", "content-type", "encoding", "truncated-gzip", "gzip-bomb"],
)
async def test_a_bad_export_is_a_problem_naming_what_is_wrong(
    room: ControlRoom, body: bytes, headers: dict[str, str], status: int, detail: str
) -> None:
    async with httpx.AsyncClient(base_url=room.url) as http:
        answer = await http.post("/v1/traces", content=body, headers=headers)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/problem+json"
    assert detail in answer.json()["detail"]
    assert not room.collector.traces


async def test_writes_are_json_only_checked_and_say_when_the_broker_is_away(room: ControlRoom) -> None:
    async with httpx.AsyncClient(base_url=room.url) as http:
        form = await http.put("/api/flags/payments.fail", content=b"value=true")
        assert form.status_code == 415  # a cross-site form cannot switch a flag
        bad = await http.put("/api/flags/payments.fail", json={"value": 3})
        assert bad.status_code == 422
        measure = await http.post("/api/patterns", content=b"rtt_ms=40")
        assert measure.status_code == 415
        out_of_range = await http.post("/api/patterns", json={"rtt_ms": 5000})
        assert out_of_range.status_code == 422
        assert "rtt_ms is 0..1000" in out_of_range.json()["detail"]
        away = await http.put("/api/flags/payments.fail", json={"value": True})
    assert away.status_code == 503  # nothing listens at this NATS URL
    assert "cannot set payments.fail" in away.json()["detail"]


def _log(process_service: str, **fields: Any) -> str:
    entry = {
        "time": "2024-05-01T12:00:00.100Z",
        "level": "info",
        "service": process_service,
        "request_id": "r1",
        "trace_id": "11" * 16,
        "span_id": "22" * 8,
        "message": "request",
        "method": "GET",
        "path": "/api/products/POT-01",
        "route": "product",
        "status": 200,
        "duration_ms": 40.0,
        **fields,
    }
    return orjson.dumps(entry).decode()


def test_an_edge_that_only_logs_is_placed_as_the_caller_of_the_services_it_called() -> None:
    collector = Collector(port_nodes={8108: "legacy"}, clock=lambda: 1714564800.2)
    # the web BFF's access-log line (no spans from it); the catalog's span, whose parent is a
    # span id the BFF made for the call and did not log
    collector.add_line("web-bff", _log("shop-web-bff"))
    start = 1714564800_060_000_000 + 10_000_000
    collector.add_hops(
        decode_export(
            orjson.dumps(
                {
                    "resourceSpans": [
                        {
                            "resource": {
                                "attributes": [{"key": "service.name", "value": {"stringValue": "catalog"}}]
                            },
                            "scopeSpans": [
                                {
                                    "spans": [
                                        {
                                            "traceId": "11" * 16,
                                            "spanId": "33" * 8,
                                            "parentSpanId": "44" * 8,
                                            "name": "GET /products/{sku}",
                                            "kind": 2,
                                            "startTimeUnixNano": str(start),
                                            "endTimeUnixNano": str(start + 5_000_000),
                                        }
                                    ]
                                }
                            ],
                        }
                    ]
                }
            ),
            "application/json",
        )
    )
    # a proxied request to the legacy monolith, which logs nothing: the edge's line names it
    collector.add_line(
        "web-bff",
        _log(
            "shop-web-bff", trace_id="55" * 16, span_id="66" * 8, request_id="r2", upstream="127.0.0.1:8108"
        ),
    )
    calls = {(link["source"], link["target"]): link["calls"] for link in collector.links()}
    assert calls == {("browser", "web-bff"): 2, ("web-bff", "catalog"): 1, ("web-bff", "legacy"): 1}
    waterfall = collector.trace("11" * 16)
    assert waterfall is not None
    assert [(s["node"], s["depth"], s["source"]) for s in waterfall["spans"]] == [
        ("web-bff", 0, "log"),
        ("catalog", 1, "span"),
    ]
    assert collector.trace_of_request("r1") == "11" * 16
    assert collector.stats()["web-bff"]["requests"] == 2


def test_a_kit_service_seen_in_its_log_and_its_span_is_one_hop() -> None:
    collector = Collector(clock=lambda: 1714564800.2)
    line = _log("catalog", kind="access", route="/products/{sku}", path="/products/POT-01")
    collector.add_line("catalog-2", line)
    span = _json_export("11" * 16)
    span["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"] = "catalog"
    span["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(
        {"spanId": "22" * 8, "parentSpanId": "77" * 8, "name": "GET /products/{sku}"}
    )
    collector.add_hops(decode_export(orjson.dumps(span), "application/json"))
    trace = collector.traces["11" * 16]
    [hop] = trace.hops.values()
    assert (hop.source, hop.process, hop.parent_id) == ("span", "catalog-2", "77" * 8)
    assert collector.stats()["catalog"] == {
        "rate": 0.1,
        "requests": 1,
        "errors": 0,
        "rejected": 0,
        "p50_ms": 40.0,
        "p95_ms": 40.0,
    }


def test_background_requests_count_but_make_no_trace_and_bounds_hold() -> None:
    collector = Collector(max_traces=3, clock=lambda: 1714564800.2)
    collector.add_line("catalog-1", _log("catalog", kind="access", path="/health/ready"))
    assert collector.stats()["catalog"]["requests"] == 1
    assert not collector.traces
    for i in range(5):
        collector.add_line("catalog-1", _log("catalog", kind="access", trace_id=f"{i:032x}"))
    assert list(collector.traces) == [f"{i:032x}" for i in (2, 3, 4)]
    collector.add_line("catalog-1", "not json {")
    collector.add_line("catalog-1", '{"status": "ok"}')  # JSON, but no request line
    assert collector.lines_read == 8


def test_decoding_refuses_what_is_not_otlp() -> None:
    with pytest.raises(OtlpError) as caught:
        decode_export(b"[]", "application/json")
    assert caught.value.status == 400


def test_a_gateway_s_spans_name_the_path_and_its_attempts_the_instance_they_reached() -> None:
    def span(span_id: str, parent: str | None, name: str, kind: int, **attributes: Any) -> dict[str, Any]:
        values = [
            {"key": k, "value": {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}}
            for k, v in attributes.items()
        ]
        return {
            "traceId": "77" * 16,
            "spanId": span_id,
            **({"parentSpanId": parent} if parent else {}),
            "name": name,
            "kind": kind,
            "startTimeUnixNano": "1714564800010000000",
            "endTimeUnixNano": "1714564800030000000",
            "attributes": values,
        }

    export = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "shop-web-bff"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            span(
                                "a1" * 8,
                                None,
                                "GET account-profile",
                                2,
                                **{"url.path": "/api/account/profile"},
                            ),
                            # the gateway's service is a role; the port says who served it
                            span(
                                "b2" * 8,
                                "a1" * 8,
                                "GET account-profile",
                                3,
                                **{"peer.service": "account-profile", "server.port": 8108},
                            ),
                        ]
                    }
                ],
            }
        ]
    }
    collector = Collector(port_nodes={8108: "legacy"}, clock=lambda: 1714564800.2)
    collector.add_hops(decode_export(orjson.dumps(export), "application/json"))
    waterfall = collector.trace("77" * 16)
    assert waterfall is not None
    root = waterfall["spans"][0]
    assert (root["node"], root["name"], root["attributes"]["edgeway.route"]) == (
        "web-bff",
        "GET /api/account/profile",
        "account-profile",
    )
    calls = {(link["source"], link["target"]) for link in collector.links()}
    assert calls == {("browser", "web-bff"), ("web-bff", "legacy")}


async def test_another_system_gets_its_own_topology_and_no_shop_parts() -> None:
    settings = ControlRoomSettings(
        host="127.0.0.1",
        port=0,
        ports={"api": 1, "api-admin": 4, "orders-1": 2, "orders-2": 3},
        edges=["api"],
        pattern="gateway",
        admin_token="t",
        nats_url="nats://127.0.0.1:1",
        config_bucket=None,
        security_url="",
        user=("u", "p"),
        partner=("c", "s"),
        shop=False,
        services=["orders"],
    )
    processes = {"api": "api", "orders-1": "orders", "orders-2": "orders"}
    room = ControlRoom(settings, list, processes, clients={})
    await room.start()
    try:
        async with httpx.AsyncClient(base_url=room.url) as http:
            state = (await http.get("/api/state")).json()
            patterns = await http.get("/api/patterns")
            flag = await http.put("/api/flags/x", json={"value": True})
    finally:
        await room.stop()
    assert [(n["id"], n["column"], n["instances"]) for n in state["nodes"]] == [
        ("client", "client", []),
        ("api", "edge", ["api"]),
        ("orders", "service", ["orders-1", "orders-2"]),
        ("broker", "broker", []),
    ]
    assert state["shop"] is False
    assert "no config_bucket" in state["flags_error"]
    assert patterns.status_code == 404
    assert flag.status_code == 404
    assert topology_nodes(["api"], processes, ["orders"], shop=False) == state["nodes"]
