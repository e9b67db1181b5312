"""A kit service reads JSON bodies with the gateway's one depth limit: a body it could parse but
never write back (deeper than pydantic serialises) is a 400 before the endpoint runs, never a
500 after it did its work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from edgeway.http.json_input import MAX_DEPTH
from edgeway.service import ServiceSettings, create_app


def nested(levels: int) -> bytes:
    return b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def echo_app(ran: list[str]) -> FastAPI:
    app = create_app("echo", settings=ServiceSettings(), configure_logging=False)

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        ran.append("echo")
        return body

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return app


async def call(app: FastAPI, path: str, content: Any, content_type: str | None) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kit") as client:
        return await client.post(path, content=content, headers=headers)


async def test_a_body_at_the_limit_is_served() -> None:
    ran: list[str] = []
    answer = await call(echo_app(ran), "/echo", nested(MAX_DEPTH), "application/json")
    assert answer.status_code == 200
    assert answer.content == nested(MAX_DEPTH)


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 300, 900])
@pytest.mark.parametrize("content_type", ["application/json", "application/merge-patch+json", None])
async def test_a_body_past_the_limit_is_a_400_before_the_endpoint_runs(
    levels: int, content_type: str | None
) -> None:
    ran: list[str] = []
    answer = await call(echo_app(ran), "/echo", nested(levels), content_type)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == f"JSON nested deeper than {MAX_DEPTH} levels"
    assert answer.json()["request_id"] == answer.headers["x-request-id"]
    assert ran == []


async def test_a_body_in_many_pieces_is_checked_whole_and_handed_on_unchanged() -> None:
    async def pieces(body: bytes) -> AsyncIterator[bytes]:
        for i in range(0, len(body), 7):
            yield body[i : i + 7]

    ran: list[str] = []
    served = await call(echo_app(ran), "/echo", pieces(nested(MAX_DEPTH)), "application/json")
    refused = await call(echo_app(ran), "/echo", pieces(nested(MAX_DEPTH + 1)), "application/json")
    assert (served.status_code, served.content) == (200, nested(MAX_DEPTH))
    assert refused.status_code == 400
    assert ran == ["echo"]


async def test_a_body_that_is_not_read_as_json_passes_through() -> None:
    answer = await call(echo_app([]), "/raw", nested(900), "text/plain")
    assert answer.json() == {"bytes": len(nested(900))}
