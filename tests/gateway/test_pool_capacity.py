"""A slow service under many concurrent clients: the gateway's pool must not cap concurrency.

With a fixed cap of 256 connections per instance, a service answering in 50 ms could never see
more than 5k req/s through the gateway whatever the load (nginx, uncapped, served 17.7k).
"""

from __future__ import annotations

import asyncio
import resource

import pytest
from gateway_helpers import config, gateway, read_request

CLIENTS = 300  # more than the old cap of 256


def _enough_descriptors(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def test_every_concurrent_request_reaches_a_slow_service_at_once() -> None:
    # client, gateway downstream, gateway upstream and service side of every request, plus slack.
    _enough_descriptors(4 * CLIENTS + 256)
    arrived = 0
    all_in = asyncio.Event()

    async def service(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal arrived
        with_close = False
        while not with_close:
            try:
                _line, headers, _ = await read_request(r)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            arrived += 1
            if arrived == CLIENTS:
                all_in.set()
            # The answer waits until every client's request is in flight here at the same time.
            await all_in.wait()
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await w.drain()
            with_close = headers.get(b"connection") == b"close"
        w.close()

    server = await asyncio.start_server(service, "127.0.0.1", 0, backlog=1024)
    bport = int(server.sockets[0].getsockname()[1])
    try:
        async with gateway(config(bport, timeouts={"connect": "2s"})) as (port, _log):

            async def one() -> bytes:
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(b"GET /api/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                out = await r.read()
                w.close()
                return out

            async with asyncio.timeout(20):
                answers = await asyncio.gather(*(one() for _ in range(CLIENTS)))
    finally:
        server.close()
    statuses = sorted({a.split(b"\r\n", 1)[0] for a in answers})
    assert statuses == [b"HTTP/1.1 200 OK"], statuses
    assert arrived == CLIENTS
