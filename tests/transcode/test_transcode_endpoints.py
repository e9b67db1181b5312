"""A gRPC method called from a Python endpoint (``req.services[name].grpc(...)``) through a real
gateway to a real gRPC server: JSON in and out as an aggregate's ``grpc`` call, the request's id,
trace and forwarded client headers as metadata, and failures answered as HTTP calls' are."""

from __future__ import annotations

import asyncio
import contextlib
import io
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
from gateway_helpers import gateway
from google.protobuf.message import Message
from grpc_fixtures import ShelvesServer, message, shelves_descriptor_set, shelves_server

from conftest import held_ports

# The endpoint the tests call: the method, message and options come in the request's JSON; it
# answers the service's status and JSON, or with "raise" lets raise_for_status() answer.
MODULE = """
    from edgeway.bff import endpoint

    @endpoint("POST", "/call", name="call_{u}")
    async def call(req):
        ask = await req.json()
        answer = await req.services[ask.get("service", "shelves")].grpc(
            ask["method"],
            ask.get("message"),
            descriptor_set=ask.get("descriptor_set", "{set}"),
            print_options=ask.get("print_options"),
            headers=ask.get("headers"),
            timeout=ask.get("timeout"),
        )
        if ask.get("raise"):
            answer.raise_for_status()
        return {"status": answer.status, "body": answer.json()}
"""
GET_SHELF = "shelves.v1.Shelves/GetShelf"


def shelf_handler(holder: list[ShelvesServer]) -> Any:
    async def get_shelf(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        if request.shelf_id == 404:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such shelf")
        if request.shelf_id == 999:
            await asyncio.sleep(2)
        return message(holder[0], "Shelf", shelf_id=str(request.shelf_id), theme=f"theme-{request.shelf_id}")

    return get_shelf


def config(tmp_path: Path, grpc_port: int) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    name = f"grpc_bff_{suffix}"
    source = textwrap.dedent(MODULE).replace("{u}", suffix).replace("{set}", str(shelves_descriptor_set()))
    (tmp_path / f"{name}.py").write_text(source)
    return {
        "name": "endpoint-grpc",
        "python": {"modules": [name], "paths": [str(tmp_path)]},
        "services": {"shelves": {"instances": [f"http://127.0.0.1:{grpc_port}"]}},
        "routes": [{"match": {"path": "/call", "methods": ["POST"]}, "endpoint": {"name": f"call_{suffix}"}}],
    }


@contextlib.asynccontextmanager
async def served(tmp_path: Path, **services: int) -> AsyncIterator[tuple[int, ShelvesServer, io.BytesIO]]:
    """The shelves server and a gateway whose endpoint calls it: (gateway port, server, access
    log); ``services`` adds services by name and port."""
    holder: list[ShelvesServer] = []
    async with shelves_server(shelves_descriptor_set(), GetShelf=shelf_handler(holder)) as server:
        holder.append(server)
        cfg = config(tmp_path, server.port)
        cfg["services"].update({n: {"instances": [f"http://127.0.0.1:{p}"]} for n, p in services.items()})
        async with gateway(cfg) as (port, log):
            yield port, server, log


async def post(port: int, ask: dict[str, Any], *extra: str) -> tuple[int, dict[str, str], Any]:
    """POST ``ask`` to the endpoint over a raw socket: (status, headers, JSON body)."""
    body = orjson.dumps(ask)
    head = "".join(f"{line}\r\n" for line in extra)
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(
        f"POST /call HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nx-request-id: ep-1\r\n{head}"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    data = await r.read()
    w.close()
    raw_head, _, raw_body = data.partition(b"\r\n\r\n")
    lines = raw_head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, orjson.loads(raw_body)


async def test_an_endpoint_calls_a_grpc_method_with_json_in_and_out_and_the_requests_context(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as (port, server, _):
        plain = await post(
            port,
            {"method": GET_SHELF, "message": {"shelfId": "7"}, "headers": {"x-tenant": "t1"}},
            "authorization: Bearer abc",
            "accept-language: de",
        )
        as_json = await post(
            port,
            {
                "method": GET_SHELF,
                "message": {"shelf_id": 8},
                "print_options": {"preserve_proto_field_names": True, "int64_as_numbers": True},
            },
        )
    status, headers, body = plain
    # proto3 JSON by default: JSON names, int64 as a string
    assert (status, body) == (200, {"status": 200, "body": {"shelfId": "7", "theme": "theme-7"}})
    assert as_json[0] == 200
    assert as_json[2]["body"] == {"shelf_id": 8, "theme": "theme-8"}
    assert [r.shelf_id for r in server.requests] == [7, 8]
    seen = server.metadata[0]
    assert seen["x-request-id"] == "ep-1"
    # the call's span is a child in the request's trace
    assert seen["traceparent"].split("-")[1] == headers["traceparent"].split("-")[1]
    assert seen["traceparent"] != headers["traceparent"]
    assert (seen["authorization"], seen["accept-language"], seen["x-tenant"]) == ("Bearer abc", "de", "t1")


async def test_an_error_status_is_the_services_answer_and_raise_for_status_answers_it_as_for_http(
    tmp_path: Path,
) -> None:
    async with served(tmp_path) as (port, _, _):
        kept = await post(port, {"method": GET_SHELF, "message": {"shelf_id": 404}})
        raised = await post(port, {"method": GET_SHELF, "message": {"shelf_id": 404}, "raise": True})
        # in the descriptor set, not served by this server
        unserved = await post(port, {"method": "shelves.v1.Shelves/ListBooks", "raise": True})
    status, _, body = kept
    assert status == 200
    assert body["status"] == 404
    assert body["body"] == {"title": "Not Found", "detail": "no such shelf", "grpc_status": "NOT_FOUND"}
    # a 4xx passes through, as a service's 4xx over HTTP does
    status, headers, problem = raised
    assert (status, headers["content-type"]) == (404, "application/problem+json")
    assert (problem["service"], problem["grpc_status"], problem["detail"]) == (
        "shelves",
        "NOT_FOUND",
        "no such shelf",
    )
    # UNIMPLEMENTED stands for 501: a service's 5xx is the client's 502, its body not shown
    status, _, problem = unserved
    assert (status, problem["service"], problem["detail"]) == (502, "shelves", "shelves: answered 501")
    assert "grpc_status" not in problem


async def test_a_timeout_a_dead_service_and_a_message_that_does_not_fit_answer_as_http_calls(
    tmp_path: Path,
) -> None:
    async with served(tmp_path, nowhere=held_ports(1)[0]) as (port, server, _):
        slow = await post(port, {"method": GET_SHELF, "message": {"shelf_id": 999}, "timeout": 0.3})
        dead = await post(port, {"method": GET_SHELF, "service": "nowhere"})
        bad = await post(port, {"method": GET_SHELF, "message": {"shelf_id": "many"}})
        unknown_field = await post(port, {"method": GET_SHELF, "message": {"shelf": 1}})
    assert (slow[0], slow[2]["code"], slow[2]["service"]) == (504, "timeout", "shelves")
    assert (dead[0], dead[2]["code"], dead[2]["service"]) == (502, "connect_failed", "nowhere")
    for status, _, problem in (bad, unknown_field):
        assert (status, problem["code"]) == (400, "unsafe_request")
        assert GET_SHELF in problem["detail"]
    assert [r.shelf_id for r in server.requests] == [999]  # nothing sent for the two bad messages


async def test_a_method_the_descriptor_set_does_not_hold_is_the_endpoints_error(tmp_path: Path) -> None:
    """Like a service the gateway does not know: the endpoint's bug, a 500 whose log says why."""
    async with served(tmp_path) as (port, server, log):
        unknown = await post(port, {"method": "shelves.v1.Shelves/Burn"})
        no_set = await post(port, {"method": GET_SHELF, "descriptor_set": str(tmp_path / "none.pb")})
        streaming = await post(port, {"method": "shelves.v1.Shelves/Watch"})
        await asyncio.sleep(0.05)  # the access-log lines are written after the answers
    assert [s for s, _, _ in (unknown, no_set, streaming)] == [500, 500, 500]
    assert server.requests == []
    errors = [orjson.loads(line).get("error", "") for line in log.getvalue().splitlines()]
    assert any("GrpcMethodError" in e and "Burn" in e for e in errors), errors
    assert any("GrpcMethodError" in e and "none.pb" in e for e in errors), errors
    assert any("GrpcMethodError" in e and "streaming" in e for e in errors), errors
