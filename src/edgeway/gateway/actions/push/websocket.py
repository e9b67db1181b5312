"""Push over WebSocket: the handshake on our engine, then wsproto's frame parser on the raw
connection (``Exchange.switch_protocols`` / ``ServerProtocol.take_upgrade``, as the proxy's tunnel does).

The client speaks JSON text messages::

    → {"type": "subscribe", "topic": "jobs/42", "replay": true}           replay what is kept
    → {"type": "subscribe", "topic": "jobs/42", "last_event_id": "01H…"}  resume after an id
    → {"type": "unsubscribe", "topic": "jobs/42"}
    → {"type": "ping"}                                                    an app-level ping
    ← {"type": "subscribed", "topic": "jobs/42"}
    ← {"type": "message", "topic": "jobs/42", "id": "01H…", "event": "job.progress.v1", "data": {…}}
    ← {"type": "error", "topic": "jobs/42", "status": 403, "title": "Forbidden", "detail": "…"}
    ← {"type": "unsubscribed", "topic": "jobs/42"} / {"type": "pong"}

Topics may also be given at connect time, ``/push?topic=jobs/42&topic=orders/7``. A refused topic
is an ``error`` message; the connection stays open.

Close codes: 1000 idle timeout, 1001 server shutting down, 1002 protocol error, 1003 binary
message, 1008 slow consumer (queue overflow) or token expired, 1009 message too big, 1011 ping
timeout. The reason text says which.

Frames to clients are built once per message (:mod:`.messages`); wsproto parses what clients
send (masked frames, fragmentation, control frames, the close handshake) and encodes control
frames.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from typing import Any
from urllib.parse import parse_qsl

import orjson
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, generate_accept_token

from edgeway.gateway.actions.push.messages import PushMessage, control_frame
from edgeway.gateway.actions.push.session import Channel, Ending, Refusal, Session
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.http.server import ServerProtocol

SUBPROTOCOL = b"edgeway.push.v1"
_CLOSE_CODES = {
    Ending.CLIENT: 1000,
    Ending.IDLE: 1000,
    Ending.SHUTDOWN: 1001,
    Ending.PROTOCOL: 1002,
    Ending.UNSUPPORTED: 1003,
    Ending.OVERFLOW: 1008,
    Ending.EXPIRED: 1008,
    Ending.REVOKED: 1008,
    Ending.TOO_BIG: 1009,
    Ending.PING_TIMEOUT: 1011,
}


async def serve_websocket(ctx: RequestContext, channel: Channel) -> None:
    ex = ctx.ex
    accept, subprotocol = _check_handshake(ctx, channel)
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", accept),
        (b"x-request-id", ex.request_id),
        (b"traceparent", ctx.traceparent),
    ]
    if subprotocol:
        headers.append((b"sec-websocket-protocol", SUBPROTOCOL))
    session = WebSocketSession(channel, ctx, ex.switch_protocols(headers))
    ex.on_server_shutdown(session.shutdown)
    ex.log["push"] = "websocket"
    try:
        session.start()
        for name, value in parse_qsl(ex.query.decode("latin-1")):
            if name == "topic":
                session.request_subscribe(value, None, replay=False)
        await session.run()
    finally:
        ex.on_server_shutdown(None)
        ex.log["push_sent"] = session.sent
        ex.log["push_end"] = session.ending.value if session.ending else None


def _check_handshake(ctx: RequestContext, channel: Channel) -> tuple[bytes, bool]:
    """Sec-WebSocket-Accept and whether our subprotocol was offered; Rejection when invalid."""
    ex = ctx.ex
    if ex.method != b"GET":
        raise Rejection(400, "Bad Request", "a WebSocket handshake is a GET request")
    if (ex.header(b"sec-websocket-version") or b"").strip() != b"13":
        raise Rejection(
            426,
            "Upgrade Required",
            "only WebSocket version 13 is supported",
            headers=[(b"sec-websocket-version", b"13")],
        )
    key = (ex.header(b"sec-websocket-key") or b"").strip()
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid_key = False
    if not valid_key:
        raise Rejection(400, "Bad Request", "Sec-WebSocket-Key must be 16 bytes in base64")
    if channel.allowed_origins is not None:
        origin = (ex.header(b"origin") or b"").decode("latin-1")
        if origin not in channel.allowed_origins:
            raise Rejection(403, "Forbidden", f"origin {origin!r} may not open this WebSocket")
    offered = b",".join(v for n, v in ex.headers if n.lower() == b"sec-websocket-protocol")
    subprotocol = SUBPROTOCOL in {p.strip() for p in offered.split(b",")}
    return generate_accept_token(key), subprotocol


class WebSocketSession(Session):
    """One client's WebSocket: parses what it sends, writes what it gets, keeps it alive."""

    def __init__(self, channel: Channel, ctx: RequestContext, protocol: ServerProtocol) -> None:
        super().__init__(channel, ctx.identity, "websocket")
        self.protocol = protocol
        self.conn = Connection(ConnectionType.SERVER)
        self.loop = asyncio.get_running_loop()
        now = self.loop.time()
        self.last_heard = now  # any bytes from the client (liveness)
        self.last_activity = now  # a message either way (idleness; pings do not count)
        self.ping_sent: float | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()
        # The socket's buffer is past its high-water mark: nothing more is written until it drains.
        self.paused = False
        self.close_code: int | None = None
        self._partial: list[str] = []
        self._partial_size = 0

    def start(self) -> None:
        early = self.protocol.take_upgrade(self)
        if early:
            self.from_downstream(early)

    # -- Tunnelled: the connection's callbacks ----------------------------------------------------
    def from_downstream(self, data: bytes) -> None:
        self.last_heard = self.loop.time()
        try:
            self.conn.receive_data(data)
        except LocalProtocolError:
            return  # bytes after the close handshake: nothing left to say
        for event in self.conn.events():
            self._on_event(event)

    def downstream_lost(self) -> None:
        self.end(Ending.CLIENT)
        if not self.lost.done():
            self.lost.set_result(None)

    def downstream_paused(self, paused: bool) -> None:
        # The writer never awaits the socket draining: a client that stops reading would hold it
        # there, deaf to the overflow, the timers and shutdown. It stops writing while paused and
        # waits for this resume like for any other wake-up.
        self.paused = paused
        if not paused:
            self.wakeup.set()

    # -- what the client sends --------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, TextMessage):
            self._partial_size += len(event.data.encode())
            if self._partial_size > self.channel.max_frame_bytes:
                self.end(Ending.TOO_BIG)
                return
            self._partial.append(event.data)
            if event.message_finished:
                text = "".join(self._partial)
                self._partial, self._partial_size = [], 0
                self.last_activity = self.last_heard
                self._on_text(text)
        elif isinstance(event, BytesMessage):
            self.end(Ending.UNSUPPORTED)
        elif isinstance(event, Ping):
            self._send(event.response())
        elif isinstance(event, Pong):
            self.ping_sent = None
        elif isinstance(event, CloseConnection):
            self._on_close(event)

    def _on_close(self, event: CloseConnection) -> None:
        state = self.conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            # the client closes: answer its close frame, then the server closes TCP (RFC 6455 §7.1.1)
            self._send(event.response())
            self.end(Ending.CLIENT)
            self.protocol.close()
        elif state is ConnectionState.CLOSED:
            self.protocol.close()  # the answer to our close frame
        else:
            # wsproto could not parse the client's bytes: it reports the code to close with
            self.close_code = event.code
            self.end(Ending.PROTOCOL)

    def _on_text(self, text: str) -> None:
        try:
            request: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._error(None, Refusal(400, "Bad Request", "messages must be JSON objects"))
            return
        if not isinstance(request, dict):
            self._error(None, Refusal(400, "Bad Request", "messages must be JSON objects"))
            return
        kind = request.get("type")
        topic = request.get("topic")
        if kind == "ping":
            self.reply(control_frame("pong"))
        elif kind in ("subscribe", "unsubscribe") and not isinstance(topic, str):
            self._error(None, Refusal(400, "Bad Request", f"{kind} needs a 'topic' string"))
        elif kind == "subscribe":
            last = request.get("last_event_id")
            self.request_subscribe(
                str(topic), last if isinstance(last, str) else None, replay=request.get("replay") is True
            )
        elif kind == "unsubscribe":
            self.unsubscribe(str(topic))
            self.reply(control_frame("unsubscribed", topic=topic))
        else:
            self._error(None, Refusal(400, "Bad Request", "type must be subscribe, unsubscribe or ping"))

    def request_subscribe(self, topic: str, last_event_id: str | None, *, replay: bool) -> None:
        if topic in self.subscriptions:
            self.reply(control_frame("subscribed", topic=topic))
            return
        found = self.limit_reached() or self.check(topic)
        if isinstance(found, Refusal):
            self._error(topic, found)
            return
        rule, _ = found
        self.reply(control_frame("subscribed", topic=topic))
        self.subscribe(topic, rule, self.resume_point([topic], last_event_id), replay)

    def _error(self, topic: str | None, refusal: Refusal) -> None:
        fields: dict[str, Any] = {"status": refusal.status, "title": refusal.title, "detail": refusal.detail}
        if topic is not None:
            fields["topic"] = topic
        self.reply(control_frame("error", **fields))

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        if data:
            self.protocol.write(data)

    def _send(self, event: Event) -> None:
        """A control frame through wsproto; nothing once the close handshake has begun."""
        with contextlib.suppress(LocalProtocolError):
            self._write(self.conn.send(event))

    def _flush(self) -> None:
        # One transport write per wake-up, whatever the number of frames: under fan-out a
        # session usually finds several messages queued, and each write is a send() call.
        frames: list[bytes] = []
        messages = False
        while (item := self.take()) is not None:
            if isinstance(item, PushMessage):
                frames.append(item.websocket_frame())
                messages = True
            else:
                frames.append(item)
        if frames:
            if messages:
                self.last_activity = self.loop.time()
            self._write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def run(self) -> None:
        """Write until the session ends, then close the WebSocket and wait for the socket to go.

        While the client's socket is paused (it does not read) nothing is written: its messages
        queue in the session until ``queue_size`` overflows, which ends the session; the close frame
        then gets ``close_timeout`` to be taken before the connection is cut. Its pings go
        unanswered meanwhile, so a reader that stalls with nothing published meets the ping
        timeout instead.
        """
        try:
            while self.active():
                if not self.paused:
                    self._flush()
                    if not self.active():
                        break
                if self.paused or not self.pending():
                    self.wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._next_deadline()):
                            await self.wakeup.wait()
                self._check_timers()
            if self.ending is Ending.SHUTDOWN:
                self._flush()  # what was queued before the shutdown still goes out
            self._send_close()
            try:
                async with asyncio.timeout(self.channel.close_timeout):
                    await asyncio.shield(self.lost)
            except TimeoutError:
                self.cut_off()  # a client that stopped reading: its close frame waits in the buffers
        finally:
            self.detach()
            if not self.lost.done():
                self.protocol.abort()  # the client never completed the close: cut it

    def _send_close(self) -> None:
        assert self.ending is not None
        if self.conn.state is not ConnectionState.OPEN:
            return
        code = self.close_code or _CLOSE_CODES[self.ending]
        self._send(CloseConnection(code=code, reason=self.ending.value))

    # -- keep-alive and idleness -----------------------------------------------------------------
    def _next_deadline(self) -> float:
        channel = self.channel
        if self.ping_sent is None:
            deadline = self.last_heard + channel.ping_interval
        else:
            deadline = self.ping_sent + channel.ping_timeout
        if channel.idle_timeout is not None:
            deadline = min(deadline, self.last_activity + channel.idle_timeout)
        wait = deadline - self.loop.time()
        left = self.seconds_left()
        return max(0.0, wait if left is None else min(wait, left))

    def _check_timers(self) -> None:
        channel = self.channel
        now = self.loop.time()
        if self.ping_sent is not None and self.last_heard > self.ping_sent:
            self.ping_sent = None  # anything from the client proves it is there
        left = self.seconds_left()
        if left is not None and left <= 0:
            self.end(Ending.EXPIRED)
        elif self.ping_sent is not None and now - self.ping_sent >= channel.ping_timeout:
            self.end(Ending.PING_TIMEOUT)
        elif channel.idle_timeout is not None and now - self.last_activity >= channel.idle_timeout:
            self.end(Ending.IDLE)
        elif self.ping_sent is None and now - self.last_heard >= channel.ping_interval:
            self.ping_sent = now
            self._send(Ping(b"edgeway"))
