"""A gRPC method as a call of an aggregate endpoint, next to an HTTP call, through a real gateway:
its JSON merges like any call's, it reads the request and other calls, and a failure is optional
or required, with a fallback or a deadline, exactly as for HTTP calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import orjson
from gateway_helpers import gateway, read_request
from google.protobuf.message import Message
from grpc_fixtures import ShelvesServer, message, shelves_descriptor_set, shelves_server


@contextlib.asynccontextmanager
async def profile_service() -> AsyncIterator[int]:
    """An HTTP service answering ``/users/<id>`` with a user whose favourite shelf is ``<id>0``."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                line, _, _ = await read_request(r)
                user = line.split(b" ")[1].rsplit(b"/", 1)[1].decode()
                data = orjson.dumps({"user": {"id": user, "favourite_shelf": int(user) * 10}})
                w.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                    % len(data)
                    + data
                )
                await w.drain()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


def shelf_handler(holder: list[ShelvesServer]) -> Any:
    async def get_shelf(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        shelf_id = request.shelf_id
        if shelf_id == 404:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such shelf")
        if shelf_id == 999:
            await asyncio.sleep(2)
        return message(holder[0], "Shelf", shelf_id=str(shelf_id), theme=f"theme-{shelf_id}")

    return get_shelf


def aggregate(http_port: int, grpc_port: int, shelf_call: dict[str, Any], **action: Any) -> dict[str, Any]:
    return {
        "name": "aggregate-grpc",
        "access_log": {"enabled": False},
        "services": {
            "profiles": {"instances": [f"http://127.0.0.1:{http_port}"]},
            "shelves": {"instances": [f"http://127.0.0.1:{grpc_port}"]},
        },
        "routes": [
            {
                "id": "screen",
                "match": {"path": "/screen/{user}"},
                "aggregate": {
                    "calls": {
                        "profile": {"service": "profiles", "path": "/users/{path.user}", "allow": ["user"]},
                        "shelf": {
                            "service": "shelves",
                            "grpc": {
                                "descriptor_set": str(shelves_descriptor_set()),
                                "method": "shelves.v1.Shelves/GetShelf",
                            },
                            "group": "shelf",
                            **shelf_call,
                        },
                    },
                    **action,
                },
            }
        ],
    }


async def get(port: int, target: str) -> tuple[int, dict[str, str], Any]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"GET {target} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\nx-request-id: agg-1\r\n\r\n".encode())
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, orjson.loads(body)


async def test_an_http_call_and_a_grpc_call_that_reads_it_merge_into_one_answer() -> None:
    holder: list[ShelvesServer] = []
    async with (
        profile_service() as http_port,
        shelves_server(shelves_descriptor_set(), GetShelf=shelf_handler(holder)) as server,
    ):
        holder.append(server)
        call = {"body": {"shelf_id": "{calls.profile.user.favourite_shelf}"}}
        async with gateway(aggregate(http_port, server.port, call)) as (port, _):
            status, _, body = await get(port, "/screen/4")
    assert status == 200, body
    assert body == {
        "user": {"id": "4", "favourite_shelf": 40},
        "shelf": {"shelfId": "40", "theme": "theme-40"},
    }
    assert server.requests[0].shelf_id == 40
    assert server.metadata[0]["x-request-id"] == "agg-1"
    assert "traceparent" in server.metadata[0]


async def test_an_optional_grpc_call_that_fails_is_reported_in_meta() -> None:
    holder: list[ShelvesServer] = []
    async with (
        profile_service() as http_port,
        shelves_server(shelves_descriptor_set(), GetShelf=shelf_handler(holder)) as server,
    ):
        holder.append(server)
        call = {"body": {"shelf_id": 404}, "required": False}
        async with gateway(aggregate(http_port, server.port, call)) as (port, _):
            status, headers, body = await get(port, "/screen/1")
    assert status == 200, body
    assert headers["x-edgeway-completed"] == "false"
    assert body["user"]["id"] == "1"
    assert "shelf" not in body
    assert body["_meta"]["errors"]["shelf"]["status"] == 404


async def test_a_required_grpc_call_that_fails_fails_the_endpoint_with_its_status() -> None:
    holder: list[ShelvesServer] = []
    async with (
        profile_service() as http_port,
        shelves_server(shelves_descriptor_set(), GetShelf=shelf_handler(holder)) as server,
    ):
        holder.append(server)
        async with gateway(aggregate(http_port, server.port, {"body": {"shelf_id": 404}})) as (port, _):
            status, headers, body = await get(port, "/screen/1")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert body["call"] == "shelf"
    assert body["detail"] == "no such shelf"
    assert body["grpc_status"] == "NOT_FOUND"


async def test_the_endpoint_deadline_bounds_a_grpc_call_and_a_fallback_stands_in() -> None:
    holder: list[ShelvesServer] = []
    async with (
        profile_service() as http_port,
        shelves_server(shelves_descriptor_set(), GetShelf=shelf_handler(holder)) as server,
    ):
        holder.append(server)
        slow = {"body": {"shelf_id": 999}}
        with_fallback = {"body": {"shelf_id": 999}, "fallback": {"theme": "unknown"}}
        async with gateway(aggregate(http_port, server.port, slow, deadline="300ms")) as (port, _):
            started = asyncio.get_running_loop().time()
            status, _, body = await get(port, "/screen/1")
            elapsed = asyncio.get_running_loop().time() - started
        async with gateway(aggregate(http_port, server.port, with_fallback, deadline="300ms")) as (port, _):
            fallback = await get(port, "/screen/2")
    assert status == 504, body
    assert body["call"] == "shelf"
    assert elapsed < 1.5
    assert fallback[0] == 200
    assert fallback[2]["shelf"] == {"theme": "unknown"}
    assert fallback[2]["_meta"]["errors"]["shelf"]["status"] == 504


async def test_a_call_body_that_does_not_fit_the_message_answers_400_from_the_client() -> None:
    holder: list[ShelvesServer] = []
    async with (
        profile_service() as http_port,
        shelves_server(shelves_descriptor_set(), GetShelf=shelf_handler(holder)) as server,
    ):
        holder.append(server)
        call = {"body": {"shelf_id": "{path.user}"}}
        async with gateway(aggregate(http_port, server.port, call)) as (port, _):
            status, _, body = await get(port, "/screen/abc")
    assert status == 400, body
    assert "shelf_id" in body["detail"]
    assert server.requests == []
