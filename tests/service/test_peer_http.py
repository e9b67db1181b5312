"""The kit's HTTP transport (edgeway.service.peer_http) against raw peers: what only a socket shows.

The contract of the clients (discovery, retries, breakers, context) is tests/service/test_clients.py;
here: a pooled connection the peer drops, answers too large or too slow, the response object.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from edgeway.http.errors import UpstreamTimeout
from edgeway.resilience.breaker import BreakerPolicy, BreakerState
from edgeway.service.clients import RetryPolicy, ServiceClient
from edgeway.service.discovery import StaticDiscovery
from edgeway.service.errors import PeerResponseError, PeerUnavailableError
from edgeway.service.peer_http import PeerHttp, ResponseBodyTooLarge

ANSWER = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@asynccontextmanager
async def raw_peer(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A peer on a free port; ``handler(reader, writer, connection number)`` per connection. The
    list counts the requests each connection carried (by connection number)."""
    counts: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts.append(0)
        try:
            await handler(reader, writer, len(counts) - 1)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away (or the test ended): what these peers wait for
        finally:
            writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", counts
    finally:
        server.close()


async def _request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def _client(url: str) -> ServiceClient:
    return ServiceClient(
        "inventory",
        StaticDiscovery({"inventory": [url]}),
        retry=RetryPolicy(attempts=1),  # no retry of the client's own: the transport's alone
        timeout=2.0,
    )


@pytest.mark.parametrize(("method", "again"), [("GET", True), ("POST", False)])
async def test_a_pooled_connection_the_peer_drops_unanswered_is_retried_fresh_only_when_idempotent(
    method: str, again: bool
) -> None:
    async def first_request_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader)
        counts[n] += 1
        writer.write(ANSWER)
        await writer.drain()
        await _request(reader)  # the second request on this connection: dropped unanswered
        counts[n] += 1

    async with raw_peer(first_request_only) as (url, counts):
        peer = _client(url)
        assert (await peer.request(method, "/stock")).status_code == 200
        if again:
            # GET: the peer closed the connection it had kept alive; nothing came back, so
            # the same request goes once more, on a new connection.
            assert (await peer.request(method, "/stock")).json() == {"ok": True}
            assert counts == [2, 1]
        else:
            # POST may have been applied by the peer: not sent again.
            with pytest.raises(PeerUnavailableError, match="closed the connection"):
                await peer.request(method, "/stock")
            assert counts == [2]
        await peer.aclose()


async def test_an_answer_larger_than_the_client_accepts_is_refused_never_cut() -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await _request(reader)
            counts[n] += 1
            if b"/declared" in head:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n" + b"x" * 5000)
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                for _ in range(5):
                    writer.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
                writer.write(b"0\r\n\r\n")
            await writer.drain()

    async with raw_peer(big) as (url, counts):
        http = PeerHttp(max_body=4096)
        with pytest.raises(
            ResponseBodyTooLarge, match="declared a 5000-byte answer; the client accepts 4096"
        ):
            await http.send("GET", url, "/declared", {}, None, 2.0)
        with pytest.raises(ResponseBodyTooLarge, match="answered more than the 4096 bytes"):
            await http.send("GET", url, "/chunked", {}, None, 2.0)
        # Through a client: not retried on another instance, not the instance's failure.
        peer = ServiceClient(
            "inventory",
            StaticDiscovery({"inventory": [url]}),
            http=http,
            retry=RetryPolicy(attempts=3, backoff=0.001),
            breaker=BreakerPolicy(consecutive_failures=1),
        )
        before = sum(counts)
        with pytest.raises(PeerUnavailableError, match="answered more than the 4096 bytes"):
            await peer.get("/chunked")
        assert sum(counts) == before + 1
        assert peer.breaker(url).state is BreakerState.CLOSED
        small = PeerHttp(max_body=10_000)
        status, _, body = await small.send("GET", url, "/chunked", {}, None, 2.0)
        assert (status, len(body)) == (200, 5000)
        await http.aclose()
        await small.aclose()


async def test_a_peer_that_does_not_answer_in_time_is_a_timeout_and_a_breaker_failure() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await _request(reader)
        await asyncio.sleep(30)

    async with raw_peer(silent) as (url, counts):
        http = PeerHttp()
        with pytest.raises(UpstreamTimeout, match=r"read timeout after 0\.3s"):
            await http.send("GET", url, "/slow", {}, None, 0.3)
        await http.aclose()
        peer = ServiceClient(
            "inventory",
            StaticDiscovery({"inventory": [url]}),
            retry=RetryPolicy(attempts=2, backoff=0.01),
            breaker=BreakerPolicy(consecutive_failures=2),
            timeout=0.3,
        )
        with pytest.raises(PeerUnavailableError, match="after 2 attempt"):
            await peer.get("/slow")
        assert peer.breaker(url).state is BreakerState.OPEN
        await peer.aclose()
    assert len(counts) == 3  # each attempt on a connection of its own: a timed-out one is dropped


async def test_the_response_reads_like_the_httpx_one_callers_used() -> None:
    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await _request(reader)
            target = head.split(b" ")[1]
            if target.startswith(b"/missing"):
                body = b'{"title":"Not Found","detail":"no sku-1"}'
                writer.write(
                    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/problem+json\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(body), body)
                )
            else:
                body = "café ".encode("latin-1") + target
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\nX-Tag: a\r\n"
                    b"x-tag: b\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
                )
            await writer.drain()

    async with raw_peer(answers) as (url, _):
        peer = _client(url)
        ok = await peer.get("/echo", params={"sku": ["a b", "c"], "fresh": True, "none": None})
        assert ok.is_success
        assert ok.headers["content-type"] == "text/plain; charset=latin-1"
        assert "X-TAG" in ok.headers
        assert ok.headers.get_list("x-tag") == ["a", "b"]
        assert ok.text == "café /echo?sku=a+b&sku=c&fresh=true&none="
        assert ok.raise_for_status() is ok
        missing = await peer.get("/missing")
        assert missing.is_error
        with pytest.raises(PeerResponseError) as caught:
            missing.raise_for_status()
        assert caught.value.status == 404
        assert caught.value.service == "inventory"
        assert "no sku-1" in str(caught.value)
        with pytest.raises(TypeError, match="json= or content="):
            await peer.post("/echo", json={}, content=b"x")
        await peer.aclose()
