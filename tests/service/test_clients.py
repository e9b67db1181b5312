from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel
from servers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from conftest import dead_port
from edgeway.observability.logs import request_context
from edgeway.resilience.breaker import BreakerPolicy, BreakerState
from edgeway.resilience.retry import IDEMPOTENT_METHODS as GATEWAY_IDEMPOTENT
from edgeway.service.clients import IDEMPOTENT_METHODS, RetryPolicy, ServiceClient, UnsafeRequest
from edgeway.service.discovery import StaticDiscovery
from edgeway.service.errors import (
    CircuitOpenError,
    NoInstancesError,
    PeerResponseError,
    PeerUnavailableError,
)
from edgeway.service.middleware import incoming_authorization
from edgeway.service.peer_http import PeerHttp

FAST_RETRY = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002)


def backend(name: str, status: int = 200) -> tuple[Starlette, Counter[str], list[dict[str, str]]]:
    hits: Counter[str] = Counter()
    seen: list[dict[str, str]] = []

    async def any_method(request: Request) -> Response:
        hits[request.method] += 1
        seen.append(dict(request.headers))
        if status != 200:
            return JSONResponse({"error": name}, status_code=status)
        return JSONResponse({"name": name, "count": hits[request.method]})

    app = Starlette(routes=[Route("/item", any_method, methods=["GET", "POST", "PUT", "DELETE"])])
    return app, hits, seen


def client(urls: list[str], **kwargs: Any) -> ServiceClient:
    kwargs.setdefault("retry", FAST_RETRY)
    return ServiceClient("inventory", StaticDiscovery({"inventory": urls}), **kwargs)


async def test_round_robin_spreads_calls_over_instances() -> None:
    a, hits_a, _ = backend("a")
    b, hits_b, _ = backend("b")
    async with serve(a) as url_a, serve(b) as url_b:
        peer = client([url_a, url_b])
        names = [(await peer.get("/item")).json()["name"] for _ in range(4)]
        await peer.aclose()
    assert names == ["a", "b", "a", "b"]
    assert hits_a["GET"] == hits_b["GET"] == 2


async def test_get_is_retried_on_the_next_instance_after_a_503() -> None:
    bad, hits_bad, _ = backend("bad", status=503)
    good, hits_good, _ = backend("good")
    async with serve(bad) as url_bad, serve(good) as url_good:
        peer = client([url_bad, url_good])
        response = await peer.get("/item")
        await peer.aclose()
    assert response.json()["name"] == "good"
    assert hits_bad["GET"] == 1
    assert hits_good["GET"] == 1


async def test_post_is_not_retried_after_a_503() -> None:
    bad, hits_bad, _ = backend("bad", status=503)
    good, hits_good, _ = backend("good")
    async with serve(bad) as url_bad, serve(good) as url_good:
        peer = client([url_bad, url_good])
        response = await peer.post("/item", json={"n": 1})
        await peer.aclose()
    assert response.status_code == 503
    assert hits_bad["POST"] == 1
    assert hits_good["POST"] == 0


async def test_post_is_retried_when_the_connection_was_refused() -> None:
    good, hits_good, _ = backend("good")
    dead = f"http://127.0.0.1:{dead_port()}"
    async with serve(good) as url_good:
        peer = client([dead, url_good])
        response = await peer.post("/item")
        await peer.aclose()
    assert response.status_code == 200
    assert hits_good["POST"] == 1


async def test_a_post_moves_on_from_an_instance_that_does_not_accept_within_the_connect_timeout() -> None:
    # An instance cut off the network drops the SYN: the call tries the next instance after the
    # connect timeout (nothing was sent), not after its whole timeout.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)  # never accepts: once its queue holds one, further SYNs are dropped
    filler = socket.create_connection(silent.getsockname())
    good, hits_good, _ = backend("good")
    try:
        async with serve(good) as url_good:
            http = PeerHttp(connect_timeout=0.3)
            peer = client([f"http://127.0.0.1:{silent.getsockname()[1]}", url_good], http=http, timeout=30)
            started = time.monotonic()
            response = await peer.post("/item")
            took = time.monotonic() - started
            await http.aclose()
    finally:
        filler.close()
        silent.close()
    assert response.status_code == 200
    assert hits_good["POST"] == 1
    assert took < 10  # the call's 30 s timeout would have been spent on the silent instance


def test_a_connect_timeout_is_a_positive_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="connect timeout"):
        PeerHttp(connect_timeout=0)


async def test_last_answer_is_returned_when_every_attempt_gets_503() -> None:
    bad, hits_bad, _ = backend("bad", status=503)
    async with serve(bad) as url_bad:
        peer = client([url_bad], breaker=BreakerPolicy(consecutive_failures=10))
        response = await peer.get("/item")
        await peer.aclose()
    assert response.status_code == 503
    assert hits_bad["GET"] == 3


async def test_unreachable_instances_raise_peer_unavailable_after_all_attempts() -> None:
    dead = [f"http://127.0.0.1:{dead_port()}", f"http://127.0.0.1:{dead_port()}"]
    peer = client(dead, breaker=BreakerPolicy(consecutive_failures=10))
    with pytest.raises(PeerUnavailableError, match="after 3 attempt"):
        await peer.get("/item")
    await peer.aclose()


async def test_breaker_opens_and_then_calls_are_refused_without_sending() -> None:
    bad, hits_bad, _ = backend("bad", status=500)
    async with serve(bad) as url_bad:
        peer = client([url_bad], breaker=BreakerPolicy(consecutive_failures=3, open_for=60))
        for _ in range(3):
            assert (await peer.get("/item")).status_code == 500
        assert peer.breaker(url_bad).state is BreakerState.OPEN
        with pytest.raises(CircuitOpenError) as caught:
            await peer.get("/item")
        await peer.aclose()
    assert hits_bad["GET"] == 3
    assert caught.value.retry_after > 59


async def test_open_instance_is_skipped_while_others_serve() -> None:
    bad, hits_bad, _ = backend("bad", status=500)
    good, _, _ = backend("good")
    async with serve(bad) as url_bad, serve(good) as url_good:
        peer = client([url_bad, url_good], breaker=BreakerPolicy(consecutive_failures=1, open_for=60))
        statuses = [(await peer.get("/item")).status_code for _ in range(5)]
        await peer.aclose()
    assert statuses == [500, 200, 200, 200, 200]
    assert hits_bad["GET"] == 1


async def test_request_id_traceparent_and_token_are_propagated() -> None:
    app, _, seen = backend("a")
    async with serve(app) as url:
        peer = client([url])
        token = incoming_authorization.set("Bearer abc.def.ghi")
        try:
            with request_context("req-42", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"):
                await peer.get("/item")
        finally:
            incoming_authorization.reset(token)
        await peer.get("/item", headers={"Authorization": "Bearer own"})
        await peer.aclose()
    first, second = seen
    assert first["x-request-id"] == "req-42"
    assert first["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert first["authorization"] == "Bearer abc.def.ghi"
    assert second["authorization"] == "Bearer own"
    assert "x-request-id" not in second


class Item(BaseModel):
    name: str
    count: int


async def test_typed_call_validates_the_body_and_raises_on_error_status() -> None:
    good, _, _ = backend("good")
    missing, _, _ = backend("gone", status=404)
    async with serve(good) as url_good, serve(missing) as url_missing:
        ok, gone = client([url_good]), client([url_missing])
        assert await ok.call("GET", "/item", Item) == Item(name="good", count=1)
        with pytest.raises(PeerResponseError) as caught:
            await gone.call("GET", "/item", Item)
        await ok.aclose()
        await gone.aclose()
    assert caught.value.status == 404


async def test_unknown_service_names_the_sources_tried() -> None:
    with pytest.raises(NoInstancesError, match="EDGEWAY_SERVICE_INVENTORY_URLS"):
        await client([]).get("/item")


async def test_a_request_the_wire_cannot_carry_is_refused_before_sending_and_a_path_value_is_encoded() -> (
    None
):
    # What code puts into a request line or header is checked like client
    # input. A bad header is the caller's mistake: refused at once, never a peer failure that
    # trips the breaker or is retried; a space or CR/LF in the path is percent-encoded.
    from starlette.routing import Route as _Route

    got: list[tuple[str, str]] = []

    async def search(request: Request) -> Response:
        got.append((request.url.path, request.query_params.get("q", "")))
        return JSONResponse({"ok": True})

    app = Starlette(routes=[_Route("/search", search)])
    async with serve(app) as url:
        peer = client([url])
        for bad in ({"x-q": "a\r\nx-injected: 1"}, {"x q": "a"}, {"x-q": "a\x00b"}):
            with pytest.raises(UnsafeRequest):
                await peer.get("/search", headers=bad)
        with pytest.raises(UnsafeRequest):
            await peer.get("@evil.example/search")  # joined to the base URL it would name a host
        with pytest.raises(UnsafeRequest):
            await peer.request("GE T", "/search")
        smuggle = "x HTTP/1.1\r\nHost: a\r\n\r\nGET /admin HTTP/1.1\r\nx:"
        response = await peer.get("/search?q=" + smuggle)
        await peer.aclose()
    assert response.status_code == 200
    assert got == [("/search", smuggle)]
    assert peer.breaker(url).state is BreakerState.CLOSED


async def test_concurrent_calls_are_not_capped_by_the_connection_pool() -> None:
    """150 calls at once all reach the peer at once (httpx's default pool held 100 for every
    host together: the rest waited, so calls/s to a slow peer stopped at 100 / latency)."""
    calls = 150
    arrived = 0
    all_in = asyncio.Event()

    async def peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal arrived
        await r.readuntil(b"\r\n\r\n")
        arrived += 1
        if arrived == calls:
            all_in.set()
        await all_in.wait()  # answer only once every call is in flight here
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
        await w.drain()
        w.close()

    server = await asyncio.start_server(peer, "127.0.0.1", 0, backlog=1024)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    inventory = client([url], timeout=5.0)
    try:
        async with asyncio.timeout(20):
            answers = await asyncio.gather(*(inventory.get("/item") for _ in range(calls)))
    finally:
        await inventory.aclose()
        server.close()
    assert [a.status_code for a in answers] == [200] * calls


async def test_a_breaker_policy_set_after_construction_governs_the_breakers() -> None:
    """The shop's orders service sets kit.client(peer).breaker_policy from its settings once the
    client exists: the breakers made after that follow it."""
    bad, _, _ = backend("bad", status=500)
    async with serve(bad) as url_bad:
        peer = client([url_bad])
        peer.breaker_policy = BreakerPolicy(consecutive_failures=1, open_for=60)
        assert (await peer.get("/item")).status_code == 500
        assert peer.breaker(url_bad).state is BreakerState.OPEN
        await peer.aclose()


def test_the_kit_client_retries_the_methods_the_gateway_counts_idempotent() -> None:
    # One list (RFC 9110 §9.2.2), TRACE included, as str for the kit's policy.
    assert RetryPolicy().methods == IDEMPOTENT_METHODS == {m.decode() for m in GATEWAY_IDEMPOTENT}
    assert "TRACE" in IDEMPOTENT_METHODS
    assert "POST" not in IDEMPOTENT_METHODS
