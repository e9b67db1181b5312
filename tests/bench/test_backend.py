from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.backend import make_body
from bench.harness import ManagedProcess, python_module


def start_backend(tmp_path: Path, *args: str) -> ManagedProcess:
    argv = python_module("bench.backend", "--port", "0", *args)
    return ManagedProcess("backend", argv, port=0, log_dir=tmp_path).start()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[ManagedProcess]:
    process = start_backend(tmp_path, "--name", "users", "--body-size", "100")
    yield process
    process.stop()


async def read_responses(reader: asyncio.StreamReader, count: int) -> list[tuple[bytes, bytes]]:
    """(head, body) of ``count`` Content-Length responses read off one connection."""
    out = []
    for _ in range(count):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        out.append((head, await reader.readexactly(length)))
    return out


def test_body_has_the_requested_size_and_the_name_as_its_only_key() -> None:
    body = make_body("orders", 80)
    assert len(body) == 80
    assert list(json.loads(body)) == ["orders"]


def test_body_never_shrinks_below_its_json_skeleton() -> None:
    assert json.loads(make_body("orders", 1)) == {"orders": {"id": 1, "pad": ""}}


async def test_answers_keep_alive_requests_on_one_connection(backend: ManagedProcess) -> None:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    for _ in range(3):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        [(head, body)] = await read_responses(reader, 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close" not in head.lower()
        assert len(body) == 100
        assert "users" in json.loads(body)
    writer.close()


async def test_answers_pipelined_requests_in_order_even_when_delays_differ(backend: ManagedProcess) -> None:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    # The first request is the slowest: its answer must still come first.
    writer.write(
        b"GET /echo?delay_ms=80 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /echo?delay_ms=0&n=2 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /echo?n=3 HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    responses = await read_responses(reader, 3)
    targets = [json.loads(body)["target"] for _, body in responses]
    assert targets == ["/echo?delay_ms=80", "/echo?delay_ms=0&n=2", "/echo?n=3"]
    writer.close()


async def test_echo_reports_method_headers_and_body(backend: ManagedProcess) -> None:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    writer.write(b"PUT /echo?a=1 HTTP/1.1\r\nHost: x\r\nX-Trace: t1\r\nContent-Length: 5\r\n\r\nhello")
    [(_, body)] = await read_responses(reader, 1)
    seen = json.loads(body)
    assert seen["method"] == "PUT"
    assert seen["path"] == "/echo"
    assert ["X-Trace", "t1"] in seen["headers"]
    assert seen["body"] == "hello"
    writer.close()


async def test_per_request_delay_holds_the_answer_back(backend: ManagedProcess) -> None:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    started = time.monotonic()
    writer.write(b"GET /?delay_ms=120 HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_responses(reader, 1)
    assert time.monotonic() - started >= 0.11
    writer.close()


async def test_startup_delay_flag_applies_to_every_request(tmp_path: Path) -> None:
    process = start_backend(tmp_path, "--delay-ms", "100")
    try:
        reader, writer = await asyncio.open_connection(process.host, process.port)
        started = time.monotonic()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_responses(reader, 1)
        assert time.monotonic() - started >= 0.09
        writer.close()
    finally:
        process.stop()


async def test_connection_close_is_honoured(backend: ManagedProcess) -> None:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    [(head, _)] = await read_responses(reader, 1)
    assert b"connection: close" in head.lower()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_malformed_request_gets_400_and_a_closed_connection(backend: ManagedProcess) -> None:
    reader, writer = await asyncio.open_connection(backend.host, backend.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 400 ")
    writer.close()
