"""An HTTP/2 test client on the ``h2`` library over a real socket: h2c with prior knowledge, or TLS
with ALPN ``h2``. It answers what the peer asks (SETTINGS, PING) like a normal client, and can
send raw frames for the attack tests."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions


@dataclass
class H2Reply:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    reset: int | None = None  # the error code of a RST_STREAM instead of a complete response


class H2Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.replies: dict[int, H2Reply] = {}
        self.done: dict[int, asyncio.Future[H2Reply]] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.auto_window = True  # give the server's DATA back to it as it arrives
        self.window_opened = asyncio.Event()
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(
        cls, port: int, ctx: ssl.SSLContext | None = None, server_hostname: str = "localhost"
    ) -> H2Client:
        if ctx is None:
            r, w = await asyncio.open_connection("127.0.0.1", port)
        else:
            r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=server_hostname)
        return cls(r, w)

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    self._event(event)
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            for future in self.done.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection closed"))
            if not self.closed.done():
                self.closed.set_result(None)

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            reply = self.replies.setdefault(event.stream_id, H2Reply())
            for name, value in event.headers:
                key = name.decode() if isinstance(name, bytes) else name
                val = value.decode() if isinstance(value, bytes) else value
                if key == ":status":
                    reply.status = int(val)
                else:
                    reply.headers[key] = val
        elif isinstance(event, h2.events.TrailersReceived):
            reply = self.replies.setdefault(event.stream_id, H2Reply())
            for name, value in event.headers:
                reply.trailers[bytes(name).decode()] = bytes(value).decode()
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None
            self.replies.setdefault(event.stream_id, H2Reply()).body += event.data or b""
            if self.auto_window and event.flow_controlled_length:
                with contextlib.suppress(h2.exceptions.StreamClosedError):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._complete(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.replies.setdefault(event.stream_id, H2Reply()).reset = event.error_code
            self._complete(event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self.window_opened.set()

    def _complete(self, stream_id: int | None) -> None:
        assert stream_id is not None
        future = self.done.get(stream_id)
        if future is not None and not future.done():
            future.set_result(self.replies.get(stream_id, H2Reply()))

    def send_request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        authority: str = "localhost",
        scheme: str = "http",
    ) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", scheme), (":path", path), (":authority", authority)]
        fields += headers or []
        self.conn.send_headers(stream_id, fields, end_stream=body is None)
        if body is not None and len(body) <= self.conn.local_flow_control_window(stream_id):
            self.conn.send_data(stream_id, body, end_stream=True)
        elif body is not None:
            asyncio.get_running_loop().create_task(self.stream_body(stream_id, body))
        self.done[stream_id] = asyncio.get_running_loop().create_future()
        self.flush()
        return stream_id

    async def stream_body(self, stream_id: int, body: bytes) -> None:
        """Send a request body as the server's windows allow, then END_STREAM."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.window_opened.clear()
                await asyncio.wait_for(self.window_opened.wait(), 10)
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self.flush()
            await self.writer.drain()
        self.conn.end_stream(stream_id)
        self.flush()

    async def response(self, stream_id: int, timeout: float = 10.0) -> H2Reply:
        return await asyncio.wait_for(asyncio.shield(self.done[stream_id]), timeout)

    async def request(
        self,
        method: str,
        path: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        authority: str = "localhost",
        timeout: float = 10.0,
    ) -> H2Reply:
        return await self.response(self.send_request(method, path, headers, body, authority), timeout)

    def alpn(self) -> str | None:
        obj = self.writer.get_extra_info("ssl_object")
        return None if obj is None else obj.selected_alpn_protocol()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close_connection()
            self.flush()
        await hang_up(self.writer, self._task)


async def hang_up(writer: asyncio.StreamWriter, reading: asyncio.Task[None]) -> None:
    """Close a test client's socket and stop the task reading it."""
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    reading.cancel()
    with contextlib.suppress(BaseException):
        await reading
