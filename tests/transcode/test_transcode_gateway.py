"""JSON to gRPC through a real gateway over sockets, in front of a real grpcio server.

Each test names what it pins down: how path variables, query parameters and the body become the
request message, how the answer prints, how a gRPC status is answered, the deadline, bad input
that never reaches the service, and what metadata the service gets.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import orjson
from gateway_helpers import gateway
from grpc_fixtures import ShelvesServer, message, shelves_descriptor_set, shelves_server
from google.protobuf.message import Message

from conftest import dead_port


def config(server_port: int, descriptor_set: Path, **transcode: Any) -> dict[str, Any]:
    return {
        "name": "transcode-test",
        "access_log": {"enabled": False},
        "services": {"shelves": {"instances": [f"http://127.0.0.1:{server_port}"]}},
        "routes": [
            {
                "id": "shelves",
                "match": {"path": "/v1/**"},
                "transcode": {"service": "shelves", "descriptor_set": str(descriptor_set), **transcode},
            }
        ],
    }


async def request(
    port: int, method: str, target: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nhost: gw.test\r\nconnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body is not None:
        head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
    w.write(head.encode() + b"\r\n" + (body or b""))
    data = await r.read()
    w.close()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    out = {
        name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
    }
    return int(lines[0].split(" ")[1]), out, orjson.loads(payload) if payload else None


def get_shelf(server_holder: list[ShelvesServer]) -> Any:
    async def handler(request: Message, context: grpc.aio.ServicerContext) -> Message:
        shelf_id = getattr(request, "shelf_id")  # noqa: B009  # a message class made at run time
        if shelf_id == 404:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"shelf {shelf_id} does not exist")
        books = (
            [{"id": "1", "title": "Dune", "genre": "FICTION", "tags": ["sf"]}] if request.with_books else []
        )  # type: ignore[attr-defined]
        return message(server_holder[0], "Shelf", shelf_id=str(shelf_id), theme="sf", books=books)

    return handler


async def test_get_with_a_path_variable_calls_the_method_and_answers_its_json() -> None:
    descriptor_set = shelves_descriptor_set()
    holder: list[ShelvesServer] = []
    async with shelves_server(descriptor_set, GetShelf=get_shelf(holder)) as server:
        holder.append(server)
        async with gateway(config(server.port, descriptor_set)) as (port, _):
            status, headers, body = await request(port, "GET", "/v1/shelves/7?with_books=true")
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert body == {
        "shelfId": "7",
        "theme": "sf",
        "books": [{"id": "1", "title": "Dune", "genre": "FICTION", "tags": ["sf"]}],
    }
    sent = server.requests[0]
    assert sent.shelf_id == 7 and sent.with_books is True  # type: ignore[attr-defined]
