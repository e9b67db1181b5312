"""The gateway's OpenTelemetry spans, caught by an in-memory exporter, against real backends over
real sockets: a SERVER span per request continuing the client's trace, a CLIENT span per upstream
attempt whose id is the traceparent the service receives, an INTERNAL span per aggregate call,
the request id and outcome as attributes; sampling decides, and an unsampled request makes no
span and tells the services so."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import textwrap
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway_helpers import backend, read_request
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conftest import dead_port
from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.http.listener import Listener, bind_socket

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class Seen:
    """What the backend received: each request's line and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[bytes, bytes]]] = []

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                line, headers, _ = await read_request(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            self.requests.append((line, headers))
            status = b"500 Internal Server Error" if b"/fail" in line else b"200 OK"
            body = b'{"ok": true}'
            w.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n" % len(body) + body
            )
            await w.drain()
        w.close()


@contextlib.asynccontextmanager
async def traced_gateway(
    services: dict[str, Any],
    routes: list[dict[str, Any]],
    python: dict[str, Any] | None = None,
    **tracing: Any,
) -> AsyncIterator[tuple[int, InMemorySpanExporter]]:
    cfg: dict[str, Any] = {
        "name": "traced-gw",
        "services": services,
        "routes": routes,
        "telemetry": {"tracing": {"enabled": True, **tracing}},
    }
    if python is not None:
        cfg["python"] = python
    gw = Gateway(validate_config(cfg), AccessLog("traced-gw", io.BytesIO()))
    exporter = InMemorySpanExporter()
    tracer = telemetry_of(gw.env).tracer
    assert tracer is not None
    tracer.add_processor(SimpleSpanProcessor(exporter))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port, exporter
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


async def get(port: int, path: str, *headers: bytes) -> tuple[int, dict[bytes, bytes]]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(
        b"GET "
        + path.encode()
        + b" HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n"
        + b"".join(headers)
        + b"\r\n"
    )
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    answered = {k.strip().lower(): v.strip() for k, _, v in (line.partition(b":") for line in head[1:])}
    return int(head[0].split()[1]), answered


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


def parent_id(span: ReadableSpan) -> str | None:
    return format(span.parent.span_id, "016x") if span.parent is not None else None


def proxy(service: str = "api") -> list[dict[str, Any]]:
    return [
        {"id": "api", "match": {"path": "/api/**"}, "proxy": {"service": service, "strip_prefix": "/api"}}
    ]


async def test_a_proxied_request_is_a_server_span_with_a_client_span_whose_id_the_service_receives() -> None:
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway({"api": {"instances": [f"http://127.0.0.1:{port}"]}}, proxy()) as (gw_port, exporter),
    ):
        status, answered = await get(
            gw_port,
            "/api/items",
            f"traceparent: 00-{TRACE}-{CLIENT_SPAN}-01\r\n".encode(),
            b"tracestate: vendor=abc\r\n",
            b"x-request-id: req-42\r\n",
        )
    assert status == 200
    spans = exporter.get_finished_spans()
    assert [s.kind for s in spans] == [SpanKind.CLIENT, SpanKind.SERVER]
    client, server = spans
    # the server span continues the client's trace
    assert hex_ids(server)[0] == TRACE
    assert parent_id(server) == CLIENT_SPAN
    assert server.parent is not None
    assert server.parent.is_remote
    assert server.name == "GET api"
    assert server.attributes is not None
    assert server.attributes["edgeway.request_id"] == "req-42"
    assert server.attributes["http.route"] == "api"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["url.path"] == "/api/items"
    assert server.status.status_code is StatusCode.UNSET
    # the client span is the server span's child, and its id is what the service got
    assert hex_ids(client)[0] == TRACE
    assert parent_id(client) == hex_ids(server)[1]
    assert client.attributes is not None
    assert client.attributes["peer.service"] == "api"
    assert client.attributes["server.port"] == port
    assert client.attributes["http.response.status_code"] == 200
    ((_, headers),) = seen.requests
    assert headers[b"traceparent"] == f"00-{TRACE}-{hex_ids(client)[1]}-01".encode()
    assert headers[b"tracestate"] == b"vendor=abc"
    assert headers[b"x-request-id"] == b"req-42"
    # the client gets the server span's id
    assert answered[b"traceparent"] == f"00-{TRACE}-{hex_ids(server)[1]}-01".encode()
    assert client.start_time is not None
    assert server.start_time is not None
    assert server.start_time <= client.start_time


async def test_each_attempt_is_a_client_span_and_the_failed_one_records_its_error() -> None:
    seen = Seen()
    dead = dead_port()
    async with (
        backend(seen.handle) as port,
        traced_gateway(
            {
                "api": {
                    "instances": [f"http://127.0.0.1:{dead}", f"http://127.0.0.1:{port}"],
                    "balancer": "round_robin",
                    "retry": {
                        "attempts": 2,
                        "backoff": "1ms",
                        "budget": {"percent": 100, "min_per_second": 100},
                    },
                }
            },
            proxy(),
        ) as (gw_port, exporter),
    ):
        for _ in range(2):  # round robin: one of the two goes to the dead instance first
            assert (await get(gw_port, "/api/x"))[0] == 200
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    clients = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert len(servers) == 2
    failed = [s for s in clients if s.status.status_code is StatusCode.ERROR]
    assert len(failed) >= 1
    assert len(clients) == 2 + len(failed)  # each failed attempt was retried once
    for span in failed:
        assert span.attributes is not None
        assert span.attributes["server.port"] == dead
        assert span.attributes["edgeway.outcome"] == "error"
        assert [e.name for e in span.events] == ["exception"]
    retried = [s for s in clients if s.attributes is not None and "http.request.resend_count" in s.attributes]
    assert len(retried) == len(failed)
    # a retry is the failed attempt's sibling, under the same server span
    assert {parent_id(s) for s in retried} == {parent_id(s) for s in failed}
    assert {parent_id(s) for s in clients} <= {hex_ids(s)[1] for s in servers}
    assert len(seen.requests) == 2
    sent = {headers[b"traceparent"].split(b"-")[2].decode() for _, headers in seen.requests}
    assert sent == {hex_ids(s)[1] for s in clients if s.status.status_code is not StatusCode.ERROR}


async def test_an_upstream_5xx_marks_both_spans_as_errors() -> None:
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway({"api": {"instances": [f"http://127.0.0.1:{port}"]}}, proxy()) as (gw_port, exporter),
    ):
        assert (await get(gw_port, "/api/fail"))[0] == 500
    client, server = exporter.get_finished_spans()
    for span in (client, server):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "500"


async def test_an_aggregate_call_is_an_internal_span_above_its_attempt() -> None:
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway(
            {
                "a": {"instances": [f"http://127.0.0.1:{port}"]},
                "b": {"instances": [f"http://127.0.0.1:{port}"]},
            },
            [
                {
                    "id": "screen",
                    "match": {"path": "/screen"},
                    "aggregate": {
                        "calls": {
                            "first": {"service": "a", "path": "/one", "group": "first"},
                            "second": {"service": "b", "path": "/two", "group": "second"},
                        }
                    },
                }
            ],
        ) as (gw_port, exporter),
    ):
        assert (await get(gw_port, "/screen", b"x-request-id: agg-1\r\n"))[0] == 200
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    calls = {s.name: s for s in spans if s.kind is SpanKind.INTERNAL}
    attempts = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert set(calls) == {"call first", "call second"}
    assert len(attempts) == 2
    server_id = hex_ids(server)[1]
    assert {parent_id(s) for s in calls.values()} == {server_id}
    assert {parent_id(s) for s in attempts} == {hex_ids(s)[1] for s in calls.values()}
    assert server.attributes is not None
    assert server.attributes["edgeway.request_id"] == "agg-1"
    # each service call carries its attempt's span id, and only one traceparent
    sent = sorted(headers[b"traceparent"].decode() for _, headers in seen.requests)
    trace_id = hex_ids(server)[0]
    assert sent == sorted(f"00-{trace_id}-{hex_ids(s)[1]}-01" for s in attempts)


async def test_sampling_off_records_nothing_and_tells_the_service() -> None:
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway({"api": {"instances": [f"http://127.0.0.1:{port}"]}}, proxy(), sample_ratio=0.0) as (
            gw_port,
            exporter,
        ),
    ):
        for _ in range(3):
            status, answered = await get(gw_port, "/api/x")
            assert status == 200
            assert answered[b"traceparent"].endswith(b"-00")
    assert exporter.get_finished_spans() == ()
    assert [headers[b"traceparent"][-3:] for _, headers in seen.requests] == [b"-00"] * 3


async def test_parent_based_sampling_follows_the_callers_flag() -> None:
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway({"api": {"instances": [f"http://127.0.0.1:{port}"]}}, proxy(), sample_ratio=0.0) as (
            gw_port,
            exporter,
        ),
    ):
        sampled = f"traceparent: 00-{TRACE}-{CLIENT_SPAN}-01\r\n".encode()
        unsampled = f"traceparent: 00-{TRACE}-{CLIENT_SPAN}-00\r\n".encode()
        assert (await get(gw_port, "/api/x", sampled))[0] == 200
        assert (await get(gw_port, "/api/x", unsampled))[0] == 200
    spans = exporter.get_finished_spans()
    assert len(spans) == 2  # the sampled request's server and client spans, nothing of the other
    assert {hex_ids(s)[0] for s in spans} == {TRACE}
    assert [headers[b"traceparent"][-3:] for _, headers in seen.requests] == [b"-01", b"-00"]


async def test_without_parent_based_the_ratio_decides_even_for_a_sampled_caller() -> None:
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway(
            {"api": {"instances": [f"http://127.0.0.1:{port}"]}},
            proxy(),
            sample_ratio=0.0,
            parent_based=False,
        ) as (gw_port, exporter),
    ):
        assert (await get(gw_port, "/api/x", f"traceparent: 00-{TRACE}-{CLIENT_SPAN}-01\r\n".encode()))[
            0
        ] == 200
    assert exporter.get_finished_spans() == ()
    ((_, headers),) = seen.requests
    assert headers[b"traceparent"].startswith(f"00-{TRACE}-".encode())
    assert headers[b"traceparent"].endswith(b"-00")


async def test_an_unmatched_request_is_a_server_span_too() -> None:
    async with traced_gateway({}, []) as (gw_port, exporter):
        assert (await get(gw_port, "/nothing", b"x-request-id: nf-1\r\n"))[0] == 404
    (server,) = exporter.get_finished_spans()
    assert server.kind is SpanKind.SERVER
    assert server.name == "GET"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 404
    assert server.attributes["edgeway.request_id"] == "nf-1"


async def test_spans_are_exported_by_otlp_over_http_to_the_configured_endpoint() -> None:
    """A real OTLP/HTTP receiver (protobuf over HTTP, decoded with opentelemetry-proto)."""
    received: list[tuple[str, dict[str, str], bytes]] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    seen = Seen()
    try:
        async with backend(seen.handle) as port:
            cfg = {
                "name": "exporting-gw",
                "services": {"api": {"instances": [f"http://127.0.0.1:{port}"]}},
                "routes": proxy(),
                "telemetry": {
                    "tracing": {
                        "enabled": True,
                        "endpoint": f"http://127.0.0.1:{collector.server_address[1]}/v1/traces",
                        "headers": {"x-collector-token": "t0k"},
                        "service_name": "edge",
                    }
                },
            }
            gw = Gateway(validate_config(cfg), AccessLog("exporting-gw", io.BytesIO()))
            await gw.start()
            listener = Listener(gw, gw.limits)
            await listener.start(bind_socket("127.0.0.1", 0))
            try:
                assert (await get(listener.port, "/api/x", b"x-request-id: otlp-1\r\n"))[0] == 200
            finally:
                await listener.shutdown(1.0)
                await gw.stop()  # flushes the batch processor
    finally:
        collector.shutdown()
    ((path, headers, body),) = received
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf"
    assert headers["x-collector-token"] == "t0k"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}["service.name"]
    assert service == "edge"
    spans = [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert sorted(span.name for span in spans) == ["GET api", "GET api"]  # server and client
    (server,) = [span for span in spans if span.kind == span.SPAN_KIND_SERVER]
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["edgeway.request_id"].string_value == "otlp-1"


async def test_a_python_endpoint_call_is_an_internal_span_above_its_attempt(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    module = f"traced_bff_{suffix}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""\
            from edgeway.bff import endpoint

            @endpoint("GET", "/home", name="home_{suffix}")
            async def home(req):
                reply = await req.services.api.get("/items")
                return {{"items": reply.json()}}
            """
        )
    )
    seen = Seen()
    async with (
        backend(seen.handle) as port,
        traced_gateway(
            {"api": {"instances": [f"http://127.0.0.1:{port}"]}},
            [
                {
                    "id": "home",
                    "match": {"path": "/home", "methods": ["GET"]},
                    "endpoint": {"name": f"home_{suffix}"},
                }
            ],
            python={"modules": [module], "paths": [str(tmp_path)]},
        ) as (gw_port, exporter),
    ):
        assert (await get(gw_port, "/home"))[0] == 200
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    (call,) = [s for s in spans if s.kind is SpanKind.INTERNAL]
    (attempt,) = [s for s in spans if s.kind is SpanKind.CLIENT]
    assert call.name == "call GET api"
    assert parent_id(call) == hex_ids(server)[1]
    assert parent_id(attempt) == hex_ids(call)[1]
    ((_, headers),) = seen.requests
    assert headers[b"traceparent"] == f"00-{hex_ids(server)[0]}-{hex_ids(attempt)[1]}-01".encode()
