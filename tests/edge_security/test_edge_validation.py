"""Request validation over real sockets: body size (declared and streamed), JSON Schema with
every error listed, and a valid body forwarded byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
from edge_helpers import edge_config, gateway, problem, recording_backend, request

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.http.body import BodyStream, buffered_body
from edgeway.http.errors import BodyTooLarge

ORDER_SCHEMA = {
    "type": "object",
    "required": ["sku", "qty"],
    "properties": {
        "sku": {"type": "string", "minLength": 3},
        "qty": {"type": "integer", "minimum": 1},
        "email": {"type": "string", "format": "email"},
        "lines": {"type": "array", "items": {"type": "object", "required": ["n"]}},
    },
    "additionalProperties": False,
}


def routes(**validate: Any) -> list[dict[str, Any]]:
    return [{"match": {"path": "/orders"}, "validate": validate}]


JSON = {"content-type": "application/json"}


async def test_a_valid_body_is_forwarded_byte_for_byte() -> None:
    body = b'{ "sku" : "abc",\n "qty": 2, "lines": [{"n": 1}] }'  # spacing kept as sent
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, routes(json_schema=ORDER_SCHEMA))) as (gw, _),
    ):
        status, _, _ = await request(gw, "POST", "/orders", JSON, body)
    assert status == 200
    _line, headers, forwarded = seen.requests[0]
    assert forwarded == body
    assert headers[b"content-length"] == str(len(body)).encode()


async def test_schema_errors_are_a_422_listing_path_and_message_and_nothing_is_forwarded() -> None:
    body = b'{"sku": "x", "qty": 0, "extra": true, "lines": [{"m": 1}], "email": "not-an-email"}'
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, routes(json_schema=ORDER_SCHEMA))) as (gw, _),
    ):
        status, headers, raw = await request(gw, "POST", "/orders", JSON, body)
    assert status == 422
    assert headers["content-type"] == ["application/problem+json"]
    found = problem(raw)
    paths = [e["path"] for e in found["errors"]]
    assert paths == ["", "/email", "/lines/0", "/qty", "/sku"]
    assert "additional properties" in found["errors"][0]["message"].lower()
    assert "email" in found["errors"][1]["message"]
    assert seen.requests == []


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        (JSON, b"{not json", 400),
        (JSON, b"", 400),
        ({"content-type": "text/plain"}, b'{"sku": "abc", "qty": 1}', 415),
        ({"content-type": "application/merge-patch+json"}, b'{"sku": "abc", "qty": 1}', 200),
    ],
)
async def test_bodies_that_are_not_json(headers: dict[str, str], body: bytes, status: int) -> None:
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, routes(json_schema=ORDER_SCHEMA))) as (gw, _),
    ):
        got, _, _raw = await request(gw, "POST", "/orders", headers, body)
    assert got == status
    assert len(seen.requests) == (1 if status == 200 else 0)


async def test_methods_outside_the_rule_are_not_validated() -> None:
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, routes(json_schema=ORDER_SCHEMA))) as (gw, _),
    ):
        status, _, _ = await request(gw, "GET", "/orders")
    assert status == 200
    assert len(seen.requests) == 1


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, routes(max_body="1KiB"))) as (gw, _),
    ):
        status, _, raw = await request(gw, "POST", "/orders", JSON, b"x" * 1025)
        small = await request(gw, "POST", "/orders", JSON, b"x" * 1024)
    assert status == 413
    assert problem(raw)["limit"] == 1024
    assert small[0] == 200
    assert [len(body) for _, _, body in seen.requests] == [1024]


async def chunked(port: int, chunks: list[bytes]) -> bytes:
    """A chunked POST; the answer is read while the body is still being sent (a 413 comes early,
    and the gateway then closes the connection)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(
        b"POST /orders HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ntransfer-encoding: chunked\r\n"
        b"content-type: application/json\r\n\r\n"
    )
    received = bytearray()

    async def read() -> None:
        with contextlib.suppress(ConnectionError):
            while data := await r.read(65536):
                received.extend(data)

    reader = asyncio.create_task(read())
    with contextlib.suppress(ConnectionError):
        for chunk in chunks:
            w.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            await w.drain()
            await asyncio.sleep(0.01)
        w.write(b"0\r\n\r\n")
        await w.drain()
    async with asyncio.timeout(5):
        await reader
    w.close()
    return bytes(received)


async def test_a_chunked_body_is_counted_while_it_streams() -> None:
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, routes(max_body="64KiB"))) as (gw, _),
    ):
        within = await chunked(gw, [b"a" * 16384] * 4)
        over = await chunked(gw, [b"a" * 16384] * 8)
    assert within.startswith(b"HTTP/1.1 200")
    assert seen.requests[0][2] == b"a" * 65536
    assert over.startswith(b"HTTP/1.1 413")
    assert len(seen.requests) == 1  # the truncated body never completed a request upstream


async def test_a_chunked_body_over_the_limit_of_a_schema_route_is_refused() -> None:
    async with recording_backend() as (port, seen):
        cfg = edge_config(port, routes(max_body="100B", json_schema={"type": "array"}))
        async with gateway(cfg) as (gw, _):
            raw = await chunked(gw, [b"[" + b"1," * 100, b"1]"])
    assert raw.startswith(b"HTTP/1.1 413")
    assert seen.requests == []


async def test_limited_body_drops_what_passes_the_limit() -> None:
    resumed: list[bool] = []
    body = BodyStream(lambda: resumed.append(False), lambda: resumed.append(True), 8, 2)
    body.feed(b"12345")
    body.limit_to(10)
    assert await body.read() == b"12345"
    body.feed(b"123456")
    body.feed(b"more")
    with pytest.raises(BodyTooLarge):
        await body.read()
    assert body.received == 15
    assert body._buffered == 0
    again = buffered_body(b"whole")
    assert (await again.read_all(100), again.at_eof) == (b"whole", True)


@pytest.mark.parametrize(
    ("validate", "message"),
    [
        ({"json_schema": {"type": "nonsense"}}, "not a valid JSON Schema"),
        ({}, "set max_body, json_schema or both"),
        ({"max_body": "-1"}, "invalid size"),
    ],
)
def test_validation_config_mistakes(validate: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(edge_config(1, routes(**validate)))
