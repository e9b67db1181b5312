"""The proxy's callback path (ProxyAction.start, gateway/actions/proxy.py): a request on a
pooled connection answered with no task. Each test warms the pool with one request first (it
has to connect: a task), so the requests after it find an idle connection; a spy counts the
requests that needed a task."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from gateway_helpers import RawHandler, backend, config, gateway, read_request

from conftest import spies_on_engine
from edgeway.gateway.actions.proxy import ProxyCall
from edgeway.gateway.config import validate_config
from edgeway.gateway.core.runtime import Gateway

Respond = Callable[[asyncio.StreamWriter, bytes, dict[bytes, bytes], int], Awaitable[bool]]


def keepalive(respond: Respond) -> RawHandler:
    """A backend serving requests on each connection until ``respond`` returns False."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = 0
        try:
            while True:
                line, headers, _ = await read_request(r)
                n += 1
                if not await respond(w, line, headers, n):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return  # the client left, or the test server is closing

    return handler


async def ok(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
    body = line.split(b" ")[1]
    w.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    await w.drain()
    return True


@pytest.fixture
def tasks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """One entry per request of a fast-path route that needed a task for its attempt."""
    spies_on_engine()
    seen: list[str] = []
    run, run_attempt = ProxyCall.run, ProxyCall.run_attempt

    def spy_run(self: ProxyCall, ep: Any) -> Any:
        if ep is not None:  # the callback path chose the instance, then had to connect
            seen.append(self.ctx.ex.path.decode())
        return run(self, ep)

    def spy_run_attempt(self: ProxyCall) -> Any:
        seen.append(self.ctx.ex.path.decode())  # a stale pooled connection: on in a task
        return run_attempt(self)

    monkeypatch.setattr(ProxyCall, "run", spy_run)
    monkeypatch.setattr(ProxyCall, "run_attempt", spy_run_attempt)
    return seen


async def exchange(port: int, *requests: bytes, expect: int) -> list[bytes]:
    """Send requests on one connection (all at once: pipelined); read ``expect`` responses."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"".join(requests))
    out: list[bytes] = []
    async with asyncio.timeout(5):
        for _ in range(expect):
            head = await r.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            out.append(head + await r.readexactly(length))
    w.close()
    return out


def get(path: bytes, *extra: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: a\r\n" + b"".join(extra) + b"\r\n"


def log_lines(out: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_pooled_requests_take_the_callback_path_and_answer_like_the_task_path(
    tasks: list[str],
) -> None:
    seen: list[dict[bytes, bytes]] = []

    async def record(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
        seen.append(headers)
        return await ok(w, line, headers, n)

    async with backend(keepalive(record)) as bport, gateway(config(bport)) as (gport, out):
        first = await exchange(gport, get(b"/api/one"), expect=1)
        rest = await exchange(
            gport, get(b"/api/two", b"X-Request-ID: abc-123\r\n"), get(b"/api/three"), expect=2
        )
    assert tasks == ["/api/one"]  # it had no pooled connection yet; the others had
    for response, path in zip([*first, *rest], [b"/one", b"/two", b"/three"], strict=True):
        assert response.startswith(b"HTTP/1.1 200")
        assert response.endswith(path)
        assert b"\r\nx-request-id: " in response
        assert b"\r\ntraceparent: 00-" in response
    assert b"x-request-id: abc-123\r\n" in rest[0]
    # What the upstream saw is the same on both paths.
    assert seen[1][b"x-request-id"] == b"abc-123"
    for headers in seen:
        assert headers[b"via"] == b"1.1 edgeway"
        assert headers[b"x-forwarded-for"] == b"127.0.0.1"
        assert int(headers[b"x-edgeway-deadline-ms"]) > 0
    lines = log_lines(out)
    assert [(x["path"], x["status"], x["route"]) for x in lines] == [
        ("/api/one", 200, "api"),
        ("/api/two", 200, "api"),
        ("/api/three", 200, "api"),
    ]
    assert lines[1]["request_id"] == "abc-123"
    assert all(x["upstream"] for x in lines)


async def test_pipelined_requests_on_the_callback_path_are_answered_in_order(tasks: list[str]) -> None:
    async def slow_first(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
        if b"/p0" in line:
            await asyncio.sleep(0.05)
        return await ok(w, line, headers, n)

    async with backend(keepalive(slow_first)) as bport, gateway(config(bport)) as (gport, _):
        await exchange(gport, get(b"/api/warm"), expect=1)
        paths = [b"/api/p%d" % i for i in range(5)]
        responses = await exchange(gport, *(get(p) for p in paths), expect=5)
    assert [r.rsplit(b"\r\n\r\n", 1)[1] for r in responses] == [p[4:] for p in paths]
    assert tasks == ["/api/warm"]


async def test_a_response_in_several_reads_is_streamed_from_a_task(tasks: list[str]) -> None:
    async def in_parts(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
        if n == 1:
            return await ok(w, line, headers, n)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello")
        await w.drain()
        await asyncio.sleep(0.1)
        w.write(b"world")
        await w.drain()
        return True

    async with backend(keepalive(in_parts)) as bport, gateway(config(bport)) as (gport, out):
        await exchange(gport, get(b"/api/warm"), expect=1)
        second, third = await exchange(gport, get(b"/api/x"), get(b"/api/y"), expect=2)
    assert tasks == ["/api/warm"]  # streaming is a task too, but not an attempt
    assert second.endswith(b"\r\n\r\nhelloworld")
    assert third.endswith(b"\r\n\r\nhelloworld")
    assert [x["status"] for x in log_lines(out)] == [200, 200, 200]


async def test_first_byte_timeout_on_the_callback_path_is_504_with_the_request_id(tasks: list[str]) -> None:
    async def hang_second(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
        if n == 1:
            return await ok(w, line, headers, n)
        await asyncio.sleep(3)
        return False

    cfg = config(0, timeouts={"first_byte": "200ms"})
    async with backend(keepalive(hang_second)) as bport:
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{bport}"]
        async with gateway(cfg) as (gport, out):
            await exchange(gport, get(b"/api/warm"), expect=1)
            (response,) = await exchange(gport, get(b"/api/slow", b"X-Request-ID: slow-1\r\n"), expect=1)
    assert tasks == ["/api/warm"]
    assert response.startswith(b"HTTP/1.1 504")
    assert b"application/problem+json" in response
    assert b"x-request-id: slow-1\r\n" in response
    problem = json.loads(response.rsplit(b"\r\n\r\n", 1)[1])
    assert problem["request_id"] == "slow-1"
    assert "first_byte" in problem["detail"]
    assert log_lines(out)[-1]["status"] == 504


@pytest.mark.parametrize(("method", "status"), [(b"GET", 200), (b"POST", 502)])
async def test_a_pooled_connection_reset_before_any_answer(
    tasks: list[str], method: bytes, status: int
) -> None:
    """Reset before a response byte: an idempotent request is retried on a fresh connection
    (through the task path), a POST is not (the upstream may have acted on it)."""
    connections = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        mine = connections
        n = 0
        try:
            while True:
                line, headers, _ = await read_request(r)
                n += 1
                if mine == 1 and n == 2:
                    w.transport.abort()  # the first connection dies under the second request
                    return
                await ok(w, line, headers, n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    async with backend(handler) as bport, gateway(config(bport)) as (gport, out):
        await exchange(gport, get(b"/api/warm"), expect=1)
        request = method + b" /api/again HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        (response,) = await exchange(gport, request, expect=1)
    # The retry of the GET is an attempt in a task, on the same instance.
    assert tasks == (["/api/warm", "/api/again"] if status == 200 else ["/api/warm"])
    assert response.startswith(b"HTTP/1.1 %d" % status)
    assert connections == (2 if status == 200 else 1)
    assert [x["status"] for x in log_lines(out)] == [200, status]


async def test_a_client_gone_mid_request_frees_the_upstream_connection(tasks: list[str]) -> None:
    answered = asyncio.Event()

    async def slow(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
        if b"/gone" in line:
            await asyncio.sleep(0.2)
            answered.set()
        return await ok(w, line, headers, n)

    async with backend(keepalive(slow)) as bport, gateway(config(bport)) as (gport, out):
        await exchange(gport, get(b"/api/warm"), expect=1)
        _, w = await asyncio.open_connection("127.0.0.1", gport)
        w.write(get(b"/api/gone"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.transport.abort()
        await asyncio.wait_for(answered.wait(), 3)
        await asyncio.sleep(0.05)
        (after,) = await exchange(gport, get(b"/api/after"), expect=1)
    assert after.endswith(b"/after")
    statuses = {x["path"]: x["status"] for x in log_lines(out)}
    assert statuses == {"/api/warm": 200, "/api/gone": 499, "/api/after": 200}
    # The abandoned response was never read to its end, so its connection was closed, not
    # pooled: the next request had to connect (in a task).
    assert tasks == ["/api/warm", "/api/after"]


def test_only_bare_proxy_routes_without_resilience_have_a_callback_path() -> None:
    cfg = config(9)
    cfg["services"]["guarded"] = {"instances": ["http://127.0.0.1:9"], "retry": {"attempts": 2}}
    cfg["routes"] += [
        {
            "id": "limited",
            "match": {"path": "/l/**"},
            "proxy": {"service": "backend"},
            "rate_limit": {"rate": 5},
        },
        {"id": "guarded", "match": {"path": "/g/**"}, "proxy": {"service": "guarded"}},
    ]
    gw = Gateway(validate_config(cfg), None)
    try:
        # The proxy routes without resilience have a callback form; whether a request takes it
        # is decided per request (the rate limit's store is awaited, so "limited" goes on in a
        # task, see test_a_filter_that_waits_sends_the_request_to_a_task).
        assert {rid for rid, p in gw.pipelines.items() if p.fast is not None} == {"api", "ws", "limited"}
    finally:
        gw.close()


async def test_round_robin_holds_whichever_path_a_request_takes(tasks: list[str]) -> None:
    served: list[str] = []

    def named(name: str) -> Respond:
        async def respond(w: asyncio.StreamWriter, line: bytes, headers: dict[bytes, bytes], n: int) -> bool:
            served.append(name)
            return await ok(w, line, headers, n)

        return respond

    async with backend(keepalive(named("b1"))) as p1, backend(keepalive(named("b2"))) as p2:
        cfg = config(p1)
        cfg["services"]["backend"]["instances"] = [f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"]
        async with gateway(cfg) as (gport, _):
            for i in range(6):
                await exchange(gport, get(b"/api/%d" % i), expect=1)
    assert sorted(served) == ["b1"] * 3 + ["b2"] * 3
    assert served[:2] != [served[0]] * 2  # alternating, not one instance twice
    assert len(tasks) == 2  # one connection per instance; after that, the callback path


async def test_a_pooled_connection_after_a_head_request_parses_the_next_response(tasks: list[str]) -> None:
    """The connection's parser is kept between exchanges, except after HEAD (whose response
    llhttp cannot know has no body): the GET after it must get its own body, not be cut."""
    connections = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                line, _, _ = await read_request(r)
                if line.startswith(b"HEAD"):
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return

    async with backend(handler) as bport, gateway(config(bport)) as (gport, _):
        await exchange(gport, get(b"/api/warm"), expect=1)
        r, w = await asyncio.open_connection("127.0.0.1", gport)
        w.write(b"HEAD /api/h HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
        w.close()
        after = await exchange(gport, get(b"/api/g1"), get(b"/api/g2"), expect=2)
    assert head.startswith(b"HTTP/1.1 200")
    assert [a.rsplit(b"\r\n\r\n", 1)[1] for a in after] == [b"hello", b"hello"]
    assert connections == 1  # one upstream connection carried all of them
