"""A real browser (Debian's chromium, through Playwright) calls a gRPC service through the
gateway in gRPC-Web text: a page from one origin (served here, nothing from a CDN) fetch()es the
gateway on another, so the CORS preflight with gRPC-Web's headers is the browser's own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from grpc_backend import backend
from grpc_callers import frame
from kittest.v1 import ledger_pb2
from test_grpc_gateway import LEDGER, gateway, ledger_config

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="needs Debian's chromium")

_PAGE = b"<!doctype html><html><head><title>grpc-web</title></head><body>grpc-web test page</body></html>"

# Runs in the page: one -text call with fetch(), the answer's frames decoded as a gRPC-Web client
# does (base64 in whole 4-character groups, padding allowed between pieces).
_CALL = """
async ([url, body]) => {
  const reply = await fetch(url, {
    method: "POST",
    headers: {"content-type": "application/grpc-web-text", "x-grpc-web": "1", "grpc-timeout": "5S"},
    body,
  });
  const text = await reply.text();
  let bytes = [];
  for (let i = 0; i < text.length; i += 4) {
    for (const c of atob(text.slice(i, i + 4))) bytes.push(c.charCodeAt(0));
  }
  const messages = [];
  let trailers = null;
  let pos = 0;
  while (pos < bytes.length) {
    const flags = bytes[pos];
    const b = bytes.slice(pos + 1, pos + 5);
    const size = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
    const payload = bytes.slice(pos + 5, pos + 5 + size);
    if (flags & 0x80) trailers = String.fromCharCode(...payload);
    else messages.push(btoa(String.fromCharCode(...payload)));
    pos += 5 + size;
  }
  return {
    status: reply.status,
    contentType: reply.headers.get("content-type"),
    grpcStatusHeader: reply.headers.get("grpc-status"),
    messages,
    trailers,
  };
}
"""


@contextlib.asynccontextmanager
async def page_server() -> AsyncIterator[int]:
    """One page over HTTP/1.1 on a loopback port: the origin the browser calls from."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline() not in (b"\r\n", b""):
            pass
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        )
        writer.write(head % len(_PAGE) + _PAGE)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_browser_fetch_of_a_text_call_crosses_origins() -> None:
    from playwright.async_api import async_playwright

    async with backend() as ledger, page_server() as page_port:
        origin = f"http://127.0.0.1:{page_port}"
        route = {"proxy": {"service": "ledger", "grpc_web": True}, "cors": {"allow_origins": [origin]}}
        async with gateway(ledger_config(ledger, route=route)) as port, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page()
                await page.goto(origin + "/")
                body = base64.b64encode(frame(ledger_pb2.Entry(account="web", amount=2).SerializeToString()))
                url = f"http://127.0.0.1:{port}{LEDGER}/Record"
                answer: dict[str, Any] = await page.evaluate(_CALL, [url, body.decode()])
                refused: dict[str, Any] = await page.evaluate(
                    _CALL, [url, base64.b64encode(frame(ledger_pb2.Entry().SerializeToString())).decode()]
                )
            finally:
                await browser.close()
    assert answer["status"] == 200
    assert answer["contentType"] == "application/grpc-web-text"
    assert ledger_pb2.Receipt.FromString(base64.b64decode(answer["messages"][0])).count == 1
    assert "grpc-status:0\r\n" in answer["trailers"]
    assert ledger.ledger.balances == {"web": 2}
    # A service's error: in the trailer frame, and in a header the page can read (exposed).
    assert refused["messages"] == []
    assert "grpc-status:3\r\n" in refused["trailers"]
    assert refused["grpcStatusHeader"] == "3"
