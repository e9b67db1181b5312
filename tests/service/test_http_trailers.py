"""A kit service under uvicorn never sees a chunked body's trailer fields as request headers."""

from __future__ import annotations

import asyncio
from typing import Annotated

import pytest
import uvicorn
from fastapi import Body, FastAPI, Header
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgeway.service.http import HeadOnlyHttpTools


def _app() -> FastAPI:
    app = FastAPI()

    @app.post("/who")
    async def who(
        payload: Annotated[dict[str, int], Body()], x_edgeway_subject: Annotated[str | None, Header()] = None
    ) -> dict[str, object]:
        # With a body parameter, FastAPI reads the body before it resolves Header() parameters.
        return {"subject": x_edgeway_subject, "body": payload}

    return app


async def _ask(http: type[HttpToolsProtocol]) -> bytes:
    config = uvicorn.Config(_app(), host="127.0.0.1", port=0, log_config=None, access_log=False, http=http)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(
            b"POST /who HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        w.write(b'7\r\n{"a":1}\r\n')
        await asyncio.sleep(0.2)  # the app has started; the trailers come after the head
        w.write(b"0\r\nX-Edgeway-Subject: admin\r\n\r\n")
        out = await asyncio.wait_for(r.read(), 5)
        w.close()
        return out
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize(
    ("http", "subject"), [(HttpToolsProtocol, b'"admin"'), (HeadOnlyHttpTools, b"null")], ids=["stock", "kit"]
)
async def test_trailers_are_not_headers(http: type[HttpToolsProtocol], subject: bytes) -> None:
    out = await _ask(http)
    assert out.startswith(b"HTTP/1.1 200"), out
    assert b'"body":{"a":1}' in out
    # The stock protocol shows the problem the kit's protocol fixes.
    assert b'"subject":' + subject in out
