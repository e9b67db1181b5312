from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from bench.aiohttp_proxy import forward_headers
from bench.harness import ManagedProcess, python_module


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ManagedProcess]:
    backend = ManagedProcess(
        "backend",
        python_module("bench.backend", "--port", "0"),
        port=0,
        log_dir=tmp_path,
    ).start()
    argv = python_module("bench.aiohttp_proxy", "--port", "0", "--upstream", backend.url)
    proxy = ManagedProcess("aiohttp", argv, port=0, log_dir=tmp_path)
    try:
        yield proxy.start()
    finally:
        proxy.stop()
        backend.stop()


def test_forward_headers_drops_hop_by_hop_and_the_ones_connection_names() -> None:
    headers = CIMultiDict(
        [
            ("Host", "gw"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("X-Kept", "yes"),
        ]
    )
    out = forward_headers(headers, "10.0.0.9")
    assert dict(out) == {"X-Kept": "yes", "X-Forwarded-For": "10.0.0.9"}


def test_forward_headers_appends_the_peer_to_an_existing_x_forwarded_for() -> None:
    out = forward_headers(CIMultiDict([("X-Forwarded-For", "1.2.3.4")]), "10.0.0.9")
    assert out["X-Forwarded-For"] == "1.2.3.4, 10.0.0.9"


async def test_forwards_method_path_query_headers_and_body(proxy: ManagedProcess) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            URL(proxy.url + "/echo?x=1&y=%2F", encoded=True),
            data=b'{"a": 1}',
            headers={"X-Custom": "abc", "Content-Type": "application/json", "Connection": "keep-alive"},
        ) as response,
    ):
        assert response.status == 200
        seen = json.loads(await response.read())
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert seen["method"] == "POST"
    assert seen["target"] == "/echo?x=1&y=%2F"
    assert seen["body"] == '{"a": 1}'
    assert headers["x-custom"] == "abc"
    assert headers["content-type"] == "application/json"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "keep-alive" not in headers.get("connection", "")


async def test_streams_the_backend_response_with_its_length(proxy: ManagedProcess) -> None:
    async with aiohttp.ClientSession() as session, session.get(proxy.url + "/") as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert int(response.headers["Content-Length"]) == len(body) == 64
        assert json.loads(body) == {"backend": {"id": 1, "pad": "x" * 35}}


async def test_serves_many_requests_over_one_keep_alive_connection(proxy: ManagedProcess) -> None:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):
            async with session.get(proxy.url + "/") as response:
                assert response.status == 200
                await response.read()


async def test_streams_a_large_request_body_through_unchanged(proxy: ManagedProcess) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, every byte value

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            proxy.url + "/echo", data=chunks(), headers={"Content-Length": str(len(payload))}
        ) as response,
    ):
        seen = json.loads(await response.read())
    assert seen["body"].encode("latin-1") == payload
    assert ["Content-Length", str(len(payload))] in seen["headers"]
