"""Push over Server-Sent Events against a real gateway, read off a raw socket."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from cache_push_helpers import http, no_connection_left, running_gateway, with_test_identity
from push_helpers import hub, push_cfg


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> None:
    with_test_identity(monkeypatch)


class EventStream:
    """A text/event-stream response read as it arrives (chunked transfer decoded)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self.reader = reader
        self.writer = writer
        self.head = head
        self.text = ""
        self.ended = False

    async def _more(self, timeout: float) -> None:
        size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), timeout)
        size = int(size_line[:-2], 16)
        if size == 0:
            self.ended = True
            raise EOFError
        chunk = await self.reader.readexactly(size + 2)
        self.text += chunk[:-2].decode()

    async def block(self, timeout: float = 3.0) -> str:
        """The next blank-line-terminated block (an event, a comment, the retry field)."""
        while "\n\n" not in self.text:
            await self._more(timeout)
        block, self.text = self.text.split("\n\n", 1)
        return block

    async def event(self, timeout: float = 3.0) -> dict[str, Any]:
        while True:
            block = await self.block(timeout)
            if block.startswith((":", "retry:")):
                continue
            fields: dict[str, Any] = {}
            for line in block.split("\n"):
                name, _, value = line.partition(": ")
                fields[name] = fields[name] + "\n" + value if name in fields else value
            if "data" in fields:
                fields["data"] = json.loads(fields["data"])
            return fields

    async def rest(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every event until the response ends."""
        events = []
        try:
            while True:
                events.append(await self.event(timeout))
        except EOFError:
            return events

    def close(self) -> None:
        self.writer.close()


async def open_stream(
    port: int, query: str, user: str | None = None, last_event_id: str | None = None
) -> EventStream:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    head = f"GET /push?{query} HTTP/1.1\r\nHost: a\r\nAccept: text/event-stream\r\n"
    if user:
        head += f"X-Test-User: {user}\r\n"
    if last_event_id:
        head += f"Last-Event-ID: {last_event_id}\r\n"
    w.write(head.encode() + b"\r\n")
    response_head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
    assert response_head.startswith(b"HTTP/1.1 200"), response_head
    return EventStream(r, w, response_head)


async def test_events_arrive_with_id_event_and_data() -> None:
    async with running_gateway(push_cfg({"retry": "2s"})) as g:
        stream = await open_stream(g.port, "topic=news&topic=jobs/1", user="alice")
        assert await stream.block() == "retry: 2000"
        hub(g).publish("news", {"headline": "hi"}, event="news.v1", id="n1")
        hub(g).publish("jobs/1", {"owner": "alice", "step": 1}, event="job.progress", id="j1")
        hub(g).publish("jobs/1", {"owner": "bob", "step": 1}, id="j2")
        first = await stream.event()
        second = await stream.event()
        stream.close()
    head = stream.head.lower()
    assert b"content-type: text/event-stream; charset=utf-8" in head
    assert b"cache-control: no-cache" in head
    assert b"transfer-encoding: chunked" in head
    assert first == {"id": "n1", "event": "news.v1", "data": {"headline": "hi"}}
    assert second == {"id": "j1", "event": "job.progress", "data": {"owner": "alice", "step": 1}}


@pytest.mark.parametrize(
    ("method", "query", "user", "status"),
    [
        ("GET", "", "alice", 400),
        ("GET", "topic=news&topic=admin/x", "alice", 403),
        ("GET", "topic=members/1", None, 401),
        ("GET", "topic=not%20valid", "alice", 400),
        ("POST", "topic=news", "alice", 405),
    ],
)
async def test_any_refused_topic_refuses_the_stream_with_a_problem(
    method: str, query: str, user: str | None, status: int
) -> None:
    headers = {"X-Test-User": user} if user else {}
    if method == "POST":
        headers["Content-Length"] = "0"
    async with running_gateway(push_cfg()) as g:
        got, h, body = await http(g.port, method, f"/push?{query}", headers)
        assert hub(g).subscribers("news") == 0
    assert got == status
    assert h["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == status


async def test_too_many_topics_is_429() -> None:
    query = "&".join(f"topic=news{i}" for i in range(3))
    cfg = push_cfg({"max_subscriptions": 2, "topics": [{"pattern": "{x}", "allow": "anyone"}]})
    async with running_gateway(cfg) as g:
        status, _, _ = await http(g.port, "GET", f"/push?{query}")
    assert status == 429


async def test_a_reconnect_with_last_event_id_gets_what_it_missed() -> None:
    async with running_gateway(push_cfg()) as g:
        stream = await open_stream(g.port, "topic=news&topic=members/1", user="alice")
        hub(g).publish("news", {"n": 1}, id="a1")
        assert (await stream.event())["id"] == "a1"
        stream.close()
        await asyncio.sleep(0.05)
        hub(g).publish("news", {"n": 2}, id="a2")
        hub(g).publish("members/1", {"n": 3}, id="a3")
        again = await open_stream(g.port, "topic=news&topic=members/1", user="alice", last_event_id="a1")
        assert [(await again.event())["id"] for _ in range(2)] == ["a2", "a3"]
        hub(g).publish("news", {"n": 4}, id="a4")
        assert (await again.event())["id"] == "a4"
        again.close()
        replayed = await open_stream(g.port, "topic=news&replay=1", user="alice")
        assert [(await replayed.event())["id"] for _ in range(3)] == ["a1", "a2", "a4"]
        replayed.close()


async def test_heartbeats_keep_a_quiet_stream_open() -> None:
    async with running_gateway(push_cfg({"heartbeat": "100ms"})) as g:
        stream = await open_stream(g.port, "topic=news")
        await stream.block()  # retry
        assert await stream.block() == ": keep-alive"
        assert await stream.block() == ": keep-alive"
        stream.close()


async def test_a_slow_reader_gets_an_error_event_and_the_stream_ends() -> None:
    big = {"pad": "x" * 60_000}
    async with running_gateway(push_cfg({"queue_size": 4})) as g:
        stream = await open_stream(g.port, "topic=news")
        for _ in range(400):
            hub(g).publish("news", big)
            await asyncio.sleep(0)
        events = await stream.rest()
        stream.close()
        meter = hub(g).meters.of("sse")
        assert meter.overflows._value.get() == 1
        assert meter.sent._value.get() == len(events) - 1  # the error event is no message
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["title"] == "Slow Consumer"
    assert len(events) < 400


async def test_shutdown_ends_the_stream_with_a_close_event() -> None:
    async with running_gateway(push_cfg()) as g:
        stream = await open_stream(g.port, "topic=news")
        hub(g).publish("news", {"n": 1})
        await asyncio.sleep(0.05)
    assert (await stream.event())["data"] == {"n": 1}
    closing = await stream.event()
    assert closing == {"event": "close", "data": {"reason": "server shutting down"}}
    with pytest.raises(EOFError):
        await stream.event()


async def test_an_idle_stream_ends() -> None:
    async with running_gateway(push_cfg({"idle_timeout": "200ms", "heartbeat": "50ms"})) as g:
        stream = await open_stream(g.port, "topic=news")
        assert await stream.rest() == []
        assert stream.ended


async def test_a_client_that_goes_away_is_unsubscribed() -> None:
    async with running_gateway(push_cfg()) as g:
        stream = await open_stream(g.port, "topic=news")
        assert hub(g).subscribers("news") == 1
        stream.close()
        for _ in range(50):
            if hub(g).subscribers("news") == 0:
                break
            await asyncio.sleep(0.02)
        assert hub(g).subscribers("news") == 0
        text, _ = g.gw.env.metrics.exposition()
        assert b'edgeway_gateway_push_connections{transport="sse"} 0.0' in text
        assert b'edgeway_gateway_push_closed_total{reason="client",transport="sse"} 1.0' in text


async def test_the_stream_ends_when_the_token_expires() -> None:
    async with running_gateway(push_cfg()) as g:
        r, w = await asyncio.open_connection("127.0.0.1", g.port)
        w.write(
            b"GET /push?topic=news HTTP/1.1\r\nHost: a\r\nX-Test-User: al\r\nX-Test-Expires-In: 0.3\r\n\r\n"
        )
        stream = EventStream(r, w, await r.readuntil(b"\r\n\r\n"))
        events = await stream.rest()
        stream.close()
    assert events[-1]["event"] == "error"
    assert events[-1]["data"]["status"] == 401


async def test_a_reader_that_stops_reading_is_cut_off_within_close_timeout_of_its_overflow() -> None:
    big = {"pad": "x" * 60_000}
    cfg = push_cfg({"queue_size": 4, "close_timeout": "300ms", "heartbeat": "60s"})
    async with running_gateway(cfg) as g:
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", g.port))
        await loop.sock_sendall(sock, b"GET /push?topic=news HTTP/1.1\r\nHost: a\r\n\r\n")
        head = b""
        while b"retry:" not in head:
            head += await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
        assert head.startswith(b"HTTP/1.1 200"), head
        try:  # from here on the client reads nothing
            for _ in range(400):  # ~24 MB
                hub(g).publish("news", big)
                await asyncio.sleep(0)
            started = loop.time()
            while b"slow consumer" not in g.log.getvalue():  # the exchange ended (and was logged)
                assert loop.time() - started < 3.0, "the stalled stream was never cut off"
                await asyncio.sleep(0.02)
            await no_connection_left(g)  # cut, not closed politely
        finally:
            sock.close()
        meter = hub(g).meters.of("sse")
        assert meter.overflows._value.get() == 1
        assert meter.send_timeouts._value.get() == 1  # its error event was never taken
        assert hub(g).meters.of("websocket").send_timeouts._value.get() == 0
