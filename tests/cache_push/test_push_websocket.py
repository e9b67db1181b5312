"""Push over WebSocket against a real gateway, with the `websockets` client library (and raw
sockets where a misbehaving client is the point)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from cache_push_helpers import no_connection_left, running_gateway, with_test_identity
from push_helpers import hub, push_cfg
from websockets.asyncio.client import ClientConnection
from wsproto.connection import Connection, ConnectionType
from wsproto.events import Ping, TextMessage

from edgeway.gateway.actions.push.messages import PushMessage, text_frame


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> None:
    with_test_identity(monkeypatch)


def connect(
    port: int, user: str | None = None, query: str = "", expires_in: float | None = None, **options: Any
) -> Any:
    headers = {"X-Test-User": user} if user else {}
    if expires_in is not None:
        headers["X-Test-Expires-In"] = str(expires_in)
    return websockets.connect(
        f"ws://127.0.0.1:{port}/push{query}", additional_headers=headers, ping_interval=None, **options
    )


async def recv(ws: ClientConnection, timeout: float = 3.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str)
    out: dict[str, Any] = json.loads(raw)
    return out


async def until_closed(ws: ClientConnection) -> tuple[int, int, str]:
    """Messages received until the server closed, and its close code and reason."""
    received = 0
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
            received += 1
    except websockets.ConnectionClosed as closed:
        frame = closed.rcvd
    if frame is None:
        raise AssertionError("the connection ended without a close frame")
    return received, frame.code, frame.reason


async def subscribe(ws: ClientConnection, topic: str, **extra: Any) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "topic": topic, **extra}))
    return await recv(ws)


async def test_a_subscriber_receives_what_is_published_on_its_topic_only() -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port) as ws:
        assert await subscribe(ws, "news") == {"type": "subscribed", "topic": "news"}
        hub(g).publish("news", {"headline": "edgeway 1.0"}, event="news.published", id="n-1")
        hub(g).publish("members/x", {"not": "yours"})
        hub(g).publish("news", b'{"headline": "second"}')
        first = await recv(ws)
        second = await recv(ws)
    assert first == {
        "type": "message",
        "topic": "news",
        "id": "n-1",
        "event": "news.published",
        "data": {"headline": "edgeway 1.0"},
    }
    assert second["data"] == {"headline": "second"}
    assert second["event"] == "message"
    assert len(second["id"]) == 26  # a ULID when the source gives none


@pytest.mark.parametrize(
    ("user", "topic", "status"),
    [
        (None, "members/1", 401),
        ("alice", "users/bob/notifications", 403),
        ("alice", "admin/panel", 403),
        ("alice", "tenants/t-bob", 403),
        ("alice", "nowhere/1", 403),  # no rule matches
        ("alice", "bad topic!", 400),
        ("alice", "a//b", 400),
    ],
)
async def test_a_refused_topic_is_an_error_message_and_the_connection_stays(
    user: str | None, topic: str, status: int
) -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port, user) as ws:
        error = await subscribe(ws, topic)
        assert (error["type"], error["status"], error["topic"]) == ("error", status, topic)
        assert hub(g).subscribers(topic) == 0
        assert await subscribe(ws, "news") == {"type": "subscribed", "topic": "news"}


@pytest.mark.parametrize(
    ("user", "topic"),
    [
        ("alice", "users/alice/notifications"),
        ("root;admin", "admin/panel"),
        ("alice", "tenants/t-alice"),  # a claim other than sub
        ("alice", "members/9"),
        (None, "news"),
    ],
)
async def test_allowed_topics(user: str | None, topic: str) -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port, user) as ws:
        assert await subscribe(ws, topic) == {"type": "subscribed", "topic": topic}
        hub(g).publish(topic, {"ok": True})
        assert (await recv(ws))["data"] == {"ok": True}


async def test_messages_with_an_owner_field_reach_only_their_owner() -> None:
    async with (
        running_gateway(push_cfg()) as g,
        connect(g.port, "alice") as alice,
        connect(g.port, "bob") as bob,
    ):
        await subscribe(alice, "jobs/1")
        await subscribe(bob, "jobs/1")  # allowed: ownership is decided per message
        hub(g).publish("jobs/1", {"owner": "alice", "progress": 10})
        hub(g).publish("jobs/1", {"progress": 20})  # no owner: nobody gets it
        hub(g).publish("jobs/1", {"owner": "bob", "progress": 30})
        assert (await recv(alice))["data"] == {"owner": "alice", "progress": 10}
        assert (await recv(bob))["data"] == {"owner": "bob", "progress": 30}
        await alice.send(json.dumps({"type": "ping"}))
        assert await recv(alice) == {"type": "pong"}  # nothing else was queued for alice


async def test_topics_in_the_query_are_subscribed_at_connect() -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port, "alice", "?topic=news&topic=admin/x") as ws:
        replies = [await recv(ws), await recv(ws)]
        assert {"type": "subscribed", "topic": "news"} in replies
        assert any(r["type"] == "error" and r["topic"] == "admin/x" for r in replies)


async def test_unsubscribe_stops_messages() -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port) as ws:
        await subscribe(ws, "news")
        await ws.send(json.dumps({"type": "unsubscribe", "topic": "news"}))
        assert await recv(ws) == {"type": "unsubscribed", "topic": "news"}
        assert hub(g).subscribers("news") == 0
        hub(g).publish("news", {"late": True})
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    "text",
    ["not json", "[1, 2]", '{"type": "subscribe"}', '{"type": "dance"}', '{"type": "subscribe", "topic": 5}'],
)
async def test_malformed_client_messages_get_a_400_error_message(text: str) -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port) as ws:
        await ws.send(text)
        error = await recv(ws)
        assert (error["type"], error["status"]) == ("error", 400)
        assert await subscribe(ws, "news") == {"type": "subscribed", "topic": "news"}


async def test_replay_and_resume_from_a_last_event_id() -> None:
    async with running_gateway(push_cfg()) as g:
        for n in range(5):
            hub(g).publish("news", {"n": n}, id=f"m{n}")
        async with connect(g.port) as ws:
            await subscribe(ws, "news", replay=True)
            assert [(await recv(ws))["data"]["n"] for _ in range(5)] == [0, 1, 2, 3, 4]
        async with connect(g.port) as ws:
            await subscribe(ws, "news", last_event_id="m2")
            assert [(await recv(ws))["id"] for _ in range(2)] == ["m3", "m4"]
            hub(g).publish("news", {"n": 5}, id="m5")
            assert (await recv(ws))["id"] == "m5"  # then live, with no gap and no repeat
        async with connect(g.port) as ws:
            await subscribe(ws, "news")  # no replay asked: live only
            hub(g).publish("news", {"n": 6}, id="m6")
            assert (await recv(ws))["id"] == "m6"


async def test_a_slow_client_is_closed_with_1008_when_its_queue_overflows() -> None:
    big = {"pad": "x" * 60_000}
    async with running_gateway(push_cfg({"queue_size": 4})) as g, connect(g.port, max_queue=1) as ws:
        await subscribe(ws, "news")
        for _ in range(400):  # ~24 MB: far beyond the socket buffers of a client that stopped reading
            hub(g).publish("news", big)
            await asyncio.sleep(0)
        received, code, reason = await until_closed(ws)
        assert code == 1008
        assert "slow consumer" in reason
        assert received < 400
        text, _ = g.gw.env.metrics.exposition()
        assert b'edgeway_gateway_push_overflows_total{transport="websocket"} 1.0' in text
        assert b'edgeway_gateway_push_closed_total{reason="overflow",transport="websocket"} 1.0' in text
        assert hub(g).meters.of("websocket").discarded._value.get() >= 1  # the one that overflowed
        assert b'edgeway_gateway_push_overflows_total{transport="sse"} 0.0' in text


async def test_a_replay_does_not_count_against_the_queue() -> None:
    async with running_gateway(push_cfg({"queue_size": 2})) as g:
        for n in range(20):
            hub(g).publish("news", {"n": n})
        async with connect(g.port) as ws:
            await subscribe(ws, "news", replay=True)
            assert [(await recv(ws))["data"]["n"] for _ in range(20)] == list(range(20))


async def test_the_connection_closes_when_the_token_expires() -> None:
    async with running_gateway(push_cfg()) as g, connect(g.port, "alice", expires_in=0.3) as ws:
        await subscribe(ws, "news")
        _, code, reason = await until_closed(ws)
    assert (code, reason) == (1008, "token expired")


async def test_shutdown_flushes_queued_messages_then_closes_with_1001() -> None:
    async with running_gateway(push_cfg()) as g:
        ws = await connect(g.port)
        await subscribe(ws, "news")
        hub(g).publish("news", {"last": True})
        await asyncio.sleep(0.05)
    # the gateway has shut down (listener shutdown: the session closes itself cleanly)
    assert (await recv(ws))["data"] == {"last": True}
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001


async def test_idle_connections_are_closed_with_1000() -> None:
    async with running_gateway(push_cfg({"idle_timeout": "300ms"})) as g, connect(g.port) as ws:
        await subscribe(ws, "news")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await recv(ws, timeout=3)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "idle timeout")


async def test_binary_and_oversized_messages_close_the_connection() -> None:
    async with running_gateway(push_cfg({"max_frame_bytes": 100})) as g:
        async with connect(g.port) as ws:
            await ws.send(b"\x00\x01")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1003
        async with connect(g.port) as ws:
            await ws.send("x" * 101)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009


async def test_subprotocol_is_accepted_when_offered() -> None:
    async with (
        running_gateway(push_cfg()) as g,
        connect(g.port, subprotocols=["edgeway.push.v1"]) as ws,
    ):
        assert ws.subprotocol == "edgeway.push.v1"


# -- raw sockets: handshakes and clients that do not behave -------------------------------------


async def handshake(port: int, extra: bytes = b"", version: bytes = b"13") -> tuple[bytes, Any, Any]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    w.write(
        b"GET /push HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\nSec-WebSocket-Key: " + key + b"\r\n" + extra + b"\r\n"
    )
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 3)
    return head, r, w


async def read_frames(r: asyncio.StreamReader, timeout: float) -> AsyncIterator[tuple[int, bytes]]:
    while True:
        first, second = await asyncio.wait_for(r.readexactly(2), timeout)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await r.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await r.readexactly(8))[0]
        yield first & 0x0F, await r.readexactly(length)


async def test_handshake_errors_are_problems() -> None:
    async with running_gateway(push_cfg({"allowed_origins": ["https://app.example"]})) as g:
        head, _, w = await handshake(g.port, version=b"8")
        w.close()
        assert head.startswith(b"HTTP/1.1 426")
        assert b"sec-websocket-version: 13" in head.lower()
        head, _, w = await handshake(g.port, b"Origin: https://evil.example\r\n")
        w.close()
        assert head.startswith(b"HTTP/1.1 403")
        head, _, w = await handshake(g.port, b"Origin: https://app.example\r\n")
        w.close()
        assert head.startswith(b"HTTP/1.1 101")


async def test_a_client_that_never_answers_pings_is_closed_with_1011() -> None:
    async with running_gateway(push_cfg({"ping_interval": "200ms", "ping_timeout": "200ms"})) as g:
        head, r, w = await handshake(g.port)
        assert head.startswith(b"HTTP/1.1 101")
        seen: list[tuple[int, bytes]] = []
        async for opcode, payload in read_frames(r, timeout=3):
            seen.append((opcode, payload))
            if opcode == 0x8:
                break
        w.close()
    assert seen[0] == (0x9, b"edgeway")  # a ping
    assert seen[-1][0] == 0x8
    assert struct.unpack("!H", seen[-1][1][:2])[0] == 1011


async def test_the_server_answers_pings_and_early_frames() -> None:
    client = Connection(ConnectionType.CLIENT)
    subscribe_frame = client.send(TextMessage(json.dumps({"type": "subscribe", "topic": "news"})))
    async with running_gateway(push_cfg()) as g:
        _, r, w = await handshake(g.port)
        w.write(subscribe_frame)  # right after the handshake, maybe in the same segment
        frames = read_frames(r, timeout=3)
        opcode, payload = await anext(frames)
        assert (opcode, json.loads(payload)) == (0x1, {"type": "subscribed", "topic": "news"})
        w.write(client.send(Ping(b"are you there")))
        opcode, payload = await anext(frames)
        assert (opcode, payload) == (0xA, b"are you there")
        w.close()


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_our_text_frames_are_what_wsproto_would_send(size: int) -> None:
    payload = b"a" * size
    server = Connection(ConnectionType.SERVER)
    assert text_frame(payload) == server.send(TextMessage(payload.decode()))


def test_one_message_is_encoded_once_for_every_client() -> None:
    message = PushMessage("id1", "news", "message", b'{"a":\n1}', 0.0)
    assert message.websocket_frame() is message.websocket_frame()
    assert message.sse_event() == b'id: id1\nevent: message\ndata: {"a":\ndata: 1}\n\n'


async def stalled_client(port: int, request: bytes, until: bytes) -> socket.socket:
    """A raw client that sends ``request``, reads until ``until`` arrived, then never reads again
    (a small receive buffer, so the gateway's side fills up quickly)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    seen = b""
    while until not in seen:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 3)
        assert chunk, seen
        seen += chunk
    return sock


async def ended_in_log(g: Any, text: bytes, within: float) -> float:
    """Seconds until the access log has a line containing ``text`` (the push exchange ended)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while text not in g.log.getvalue():
        if loop.time() - started > within:
            raise AssertionError(f"no access log line with {text!r} within {within}s")
        await asyncio.sleep(0.02)
    return loop.time() - started


async def test_a_client_that_stops_reading_is_cut_off_within_close_timeout_of_its_overflow() -> None:
    big = {"pad": "x" * 60_000}
    client = Connection(ConnectionType.CLIENT)
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET /push HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        + key
        + b"\r\n\r\n"
        + client.send(TextMessage(json.dumps({"type": "subscribe", "topic": "news"})))
    )
    cfg = push_cfg({"queue_size": 4, "close_timeout": "300ms", "ping_interval": "60s"})
    async with running_gateway(cfg) as g:
        sock = await stalled_client(g.port, request, b"subscribed")
        try:
            for _ in range(400):  # ~24 MB: far beyond every buffer between the gateway and the client
                hub(g).publish("news", big)
                await asyncio.sleep(0)
            # Overflowed by now; the session ends, its close frame cannot be delivered, and the
            # connection is cut after close_timeout (before: the writer waited for the socket to
            # drain, forever, and the exchange never ended).
            await ended_in_log(g, b"slow consumer", within=3.0)
            await no_connection_left(g)  # cut, not closed politely
        finally:
            sock.close()
        text, _ = g.gw.env.metrics.exposition()
        assert b'edgeway_gateway_push_overflows_total{transport="websocket"} 1.0' in text
        # its close frame was never taken: the slow consumer was cut off
        assert b'edgeway_gateway_push_send_timeouts_total{transport="websocket"} 1.0' in text
