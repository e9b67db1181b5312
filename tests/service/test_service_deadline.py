"""The gateway's deadline (X-Edgeway-Deadline-Ms) in a service: honoured, answered 504, passed on."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import StreamingResponse
from servers import serve

from edgeway.service import Kit, RetryPolicy, ServiceSettings, create_app
from edgeway.service.clients import ServiceClient
from edgeway.service.deadline import remaining
from edgeway.service.discovery import StaticDiscovery

DEADLINE = "X-Edgeway-Deadline-Ms"


def _app(name: str, **settings: Any) -> FastAPI:
    return create_app(name, settings=ServiceSettings(**settings), configure_logging=False, access_log=False)


def _backend() -> tuple[FastAPI, list[str | None], Counter[str]]:
    """A peer that records the deadline header it gets and can be slow or failing."""
    app = _app("inventory")
    seen: list[str | None] = []
    outcome: Counter[str] = Counter()

    @app.get("/stock")
    async def stock(request: Request, sleep: float = 0.0, status: int = 200) -> Any:
        seen.append(request.headers.get(DEADLINE))
        try:
            await asyncio.sleep(sleep)
        except asyncio.CancelledError:
            outcome["cancelled"] += 1
            raise
        outcome["finished"] += 1
        if status != 200:
            from edgeway.service import Problem

            raise Problem(status)
        return {"left": remaining()}

    return app, seen, outcome


async def test_without_the_header_there_is_no_deadline_and_none_is_sent_on() -> None:
    peer, seen, _ = _backend()
    async with serve(peer) as peer_url:
        app = _app("orders", services={"inventory": [peer_url]})

        @app.get("/order")
        async def order(kit: Kit) -> Any:
            return {"left": remaining(), "peer": (await kit.client("inventory").get("/stock")).json()}

        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            body = (await http.get("/order")).json()
    assert body == {"left": None, "peer": {"left": None}}
    assert seen == [None]


async def test_the_endpoint_sees_the_time_left_and_calls_pass_on_what_remains() -> None:
    peer, seen, _ = _backend()
    async with serve(peer) as peer_url:
        app = _app("orders", services={"inventory": [peer_url]})

        @app.get("/order")
        async def order(kit: Kit) -> Any:
            before = remaining()
            await asyncio.sleep(0.2)  # work before the call uses up part of the budget
            return {"before": before, "peer": (await kit.client("inventory").get("/stock")).json()}

        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            response = await http.get("/order", headers={DEADLINE: "5000"})
    body = response.json()
    assert response.status_code == 200
    assert 4.0 < body["before"] <= 5.0
    (sent,) = seen
    assert sent is not None
    assert 0 < int(sent) <= 4800
    assert 0 < body["peer"]["left"] <= int(sent) / 1000


async def test_a_deadline_spent_on_arrival_is_answered_504_without_running_the_endpoint() -> None:
    app = _app("orders")
    calls: list[str] = []

    @app.get("/order")
    async def order() -> dict[str, str]:
        calls.append("ran")
        return {}

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/order", headers={DEADLINE: "0", "X-Request-ID": "r-1"})
        assert (await http.get("/order", headers={DEADLINE: "soon"})).status_code == 200  # junk: ignored
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "the request's deadline had passed on arrival"
    assert response.json()["request_id"] == "r-1"
    assert calls == ["ran"]  # only the request with the junk header


async def test_work_past_the_deadline_is_cancelled_and_answered_504() -> None:
    app = _app("orders")
    outcome: Counter[str] = Counter()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            outcome["cancelled"] += 1
            raise
        outcome["finished"] += 1
        return {}

    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
        response = await http.get("/slow", headers={DEADLINE: "200"})
    assert response.status_code == 504
    assert response.json()["detail"] == "the request's deadline (200 ms) passed before the answer was ready"
    assert outcome == {"cancelled": 1}


async def test_a_response_already_started_finishes_and_background_tasks_have_no_deadline() -> None:
    app = _app("orders")
    background: list[float | None] = []

    async def chunks() -> Any:
        yield b"first "
        await asyncio.sleep(0.4)  # past the 100 ms deadline, but the answer is under way
        yield b"second"

    @app.get("/stream")
    async def stream(tasks: BackgroundTasks) -> StreamingResponse:
        tasks.add_task(lambda: background.append(remaining()))
        return StreamingResponse(chunks())

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.get("/stream", headers={DEADLINE: "100"})
    assert (response.status_code, response.content) == (200, b"first second")
    assert background == [None]


async def test_a_call_stops_when_the_deadline_runs_out_and_the_peer_stops_too() -> None:
    peer, seen, peer_outcome = _backend()
    async with serve(peer) as peer_url:
        app = _app("orders", services={"inventory": [peer_url]}, client_timeout=30.0)

        @app.get("/order")
        async def order(kit: Kit) -> Any:
            return (await kit.client("inventory").get("/stock", params={"sleep": 30})).json()

        async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=20) as http:
            # 1.5 s, not less: on a loaded machine a tighter budget can run out before the call
            # is even sent, and then the peer has nothing to give up.
            response = await http.get("/order", headers={DEADLINE: "1500"})
            await _until(lambda: peer_outcome["cancelled"] == 1)
    assert response.status_code == 504
    assert peer_outcome == {"cancelled": 1}  # the peer got the budget too, and gave up with us
    assert seen[0] is not None
    assert 0 < int(seen[0]) <= 1500


async def test_a_client_does_not_retry_past_the_deadline() -> None:
    peer, seen, _ = _backend()
    async with serve(peer) as peer_url:
        slow_retry = RetryPolicy(attempts=3, backoff=5.0, max_backoff=5.0)
        client = ServiceClient("inventory", StaticDiscovery({"inventory": [peer_url]}), retry=slow_retry)
        app = _app("orders")

        @app.get("/order")
        async def order() -> Any:
            return (await client.get("/stock", params={"status": 503})).status_code

        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            # Full jitter may pick a short backoff: try until one is longer than what is left.
            for _ in range(20):
                response = await http.get("/order", headers={DEADLINE: "1000"})
                if response.status_code == 504:
                    break
        await client.aclose()
    assert response.status_code == 504, "every backoff fitted in the deadline twenty times"
    assert "no time left to retry; last:" in response.json()["detail"]
    assert response.json()["service"] == "inventory"
    assert all(0 < int(s or 0) <= 1000 for s in seen)


async def _until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
