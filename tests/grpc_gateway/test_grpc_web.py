"""gRPC-Web through the gateway (``proxy.grpc_web``), against a real grpcio server: browsers'
calls in (binary and base64 text, over HTTP/1.1 from a raw socket and over HTTP/2 with httpx),
real gRPC to the service, the answer as gRPC-Web frames with the status in a trailer frame."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from grpc_backend import Backend, backend
from grpc_callers import frame
from grpc_helpers import Issuer, issuer
from kittest.v1 import ledger_pb2
from test_grpc_gateway import LEDGER, gateway, ledger_config

from edgeway.gateway.config import ConfigError, validate_config

ORIGIN = "https://app.test"
WEB = "application/grpc-web+proto"
TEXT = "application/grpc-web-text+proto"


def web_config(ledger: Backend | None, port: int | None = None, **route: Any) -> dict[str, Any]:
    top = route.pop("top", {})
    return ledger_config(
        ledger, port, route={"proxy": {"service": "ledger", "grpc_web": True}, **route}, top=top
    )


@dataclass
class WebAnswer:
    status: int
    head: dict[str, str]
    chunks: list[bytes]  # the body as it came, one HTTP chunk (or HTTP/2 DATA read) each
    messages: list[bytes] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    frames: int = 0

    @property
    def code(self) -> int:
        return int(self.trailers["grpc-status"])

    @property
    def message(self) -> str:
        return urllib.parse.unquote(self.trailers.get("grpc-message", ""))


def parse(answer: WebAnswer) -> WebAnswer:
    """The body's frames: messages, then exactly one trailer frame, last, nothing after."""
    text = answer.head.get("content-type", "").startswith("application/grpc-web-text")
    data = b"".join(unbase64(c) for c in answer.chunks) if text else b"".join(answer.chunks)
    while data:
        flags, size = data[0], struct.unpack(">I", data[1:5])[0]
        payload, data = data[5 : 5 + size], data[5 + size :]
        assert len(payload) == size, "a frame cut short"
        answer.frames += 1
        if flags & 0x80:
            assert not data, "bytes after the trailer frame"
            for line in payload.decode().split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    assert name == name.lower()
                    answer.trailers[name] = value.strip()
        else:
            assert not answer.trailers, "a message after the trailer frame"
            answer.messages.append(payload)
    return answer


def unbase64(text: bytes) -> bytes:
    """Base64 made of padded pieces one after another: each 4-character group decodes alone.
    A chunk must be whole groups: a piece never spans two writes."""
    assert len(text) % 4 == 0, "a base64 chunk that is not whole 4-character groups"
    return b"".join(base64.b64decode(text[i : i + 4], validate=True) for i in range(0, len(text), 4))


class Http1:
    """One gRPC-Web request on a raw HTTP/1.1 connection; the answer read chunk by chunk."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(
        self,
        path: str,
        body: bytes,
        content_type: str = WEB,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> tuple[int, dict[str, str]]:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        lines = [f"{method} {path} HTTP/1.1", "host: gateway", f"content-length: {len(body)}"]
        if content_type:
            lines.append(f"content-type: {content_type}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self.reader.readline()).split()[1])
        head: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            head[name.strip().lower()] = value.strip()
        return status, head

    async def chunk(self, head: dict[str, str]) -> bytes:
        """The next body chunk (b"" at the end; HTTP trailers, if any, must be none)."""
        assert self.reader is not None
        if head.get("transfer-encoding") != "chunked":
            return await self.reader.readexactly(int(head.get("content-length", "0")))
        size = int((await self.reader.readline()).strip(), 16)
        if size == 0:
            assert await self.reader.readline() == b"\r\n", "gRPC-Web sends no HTTP trailers"
            return b""
        data = await self.reader.readexactly(size)
        await self.reader.readexactly(2)
        return data

    async def call(self, path: str, body: bytes, content_type: str = WEB, **headers: str) -> WebAnswer:
        try:
            status, head = await self.send(
                path, body, content_type, {k.replace("_", "-"): v for k, v in headers.items()}
            )
            chunks = []
            if head.get("transfer-encoding") == "chunked":
                while chunk := await self.chunk(head):
                    chunks.append(chunk)
            else:
                chunks.append(await self.chunk(head))
            return parse(WebAnswer(status, head, chunks))
        finally:
            await self.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


def body_of(message: bytes, text: bool = False) -> bytes:
    framed = frame(message)
    return base64.b64encode(framed) if text else framed


@pytest.fixture
async def ledger() -> AsyncIterator[Backend]:
    async with backend() as running:
        yield running


@pytest.mark.parametrize("content_type", [WEB, "application/grpc-web"])
async def test_unary_binary_call_answers_messages_then_a_trailer_frame(
    ledger: Backend, content_type: str
) -> None:
    async with gateway(web_config(ledger)) as port:
        entry = ledger_pb2.Entry(account="acme", amount=7).SerializeToString()
        recorded = await Http1(port).call(f"{LEDGER}/Record", body_of(entry), content_type)
        assert recorded.status == 200
        assert recorded.head["content-type"] == content_type  # the codec suffix kept
        assert recorded.code == 0
        assert ledger_pb2.Receipt.FromString(recorded.messages[0]).count == 1
        balance = await Http1(port).call(
            f"{LEDGER}/Balance", body_of(ledger_pb2.BalanceRequest(account="acme").SerializeToString())
        )
        assert ledger_pb2.BalanceReply.FromString(balance.messages[0]).balance == 7
        assert balance.trailers["x-ledger-instance"] == "ledger-1"  # the service's own trailer, in the frame
        assert balance.frames == 2


async def test_unary_text_call_is_base64_both_ways(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        entry = ledger_pb2.Entry(account="acme", amount=3).SerializeToString()
        answer = await Http1(port).call(f"{LEDGER}/Record", body_of(entry, text=True), TEXT)
        assert answer.status == 200
        assert answer.head["content-type"] == TEXT
        assert answer.code == 0
        assert ledger_pb2.Receipt.FromString(answer.messages[0]).count == 1
        assert ledger.ledger.balances == {"acme": 3}


async def test_a_text_body_in_padded_pieces_is_read_whole(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        one = body_of(ledger_pb2.Entry(account="a", amount=1).SerializeToString())
        # Two messages base64-encoded apart: padding in the middle, as the spec allows.
        body = base64.b64encode(one[:4]) + base64.b64encode(one[4:])
        assert b"=" in body[:-2]
        answer = await Http1(port).call(f"{LEDGER}/Record", body, TEXT)
        assert answer.code == 0
        assert ledger.ledger.balances == {"a": 1}


async def test_binary_request_with_accept_text_gets_a_text_answer(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        entry = ledger_pb2.Entry(account="acme", amount=1).SerializeToString()
        answer = await Http1(port).call(
            f"{LEDGER}/Record", body_of(entry), WEB, accept="application/grpc-web-text"
        )
        assert answer.head["content-type"] == TEXT
        assert answer.code == 0


async def test_unary_call_over_http2(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        async with httpx.AsyncClient(http1=False, http2=True) as client:
            reply = await client.post(
                f"http://127.0.0.1:{port}{LEDGER}/Whoami",
                content=base64.b64encode(frame(b"")),
                headers={
                    "content-type": "application/grpc-web-text",
                    "x-grpc-web": "1",
                    "grpc-timeout": "5S",
                },
            )
        assert reply.http_version == "HTTP/2"
        answer = parse(WebAnswer(reply.status_code, dict(reply.headers), [reply.content]))
        assert answer.head["content-type"] == "application/grpc-web-text"
        assert answer.code == 0
        who = ledger_pb2.WhoamiReply.FromString(answer.messages[0])
        assert 0 < who.deadline_left <= 5.0  # the client's grpc-timeout reached the service
        seen = ledger.ledger.metadata[-1]
        assert seen["x-grpc-web"] == "1"


async def test_server_streaming_is_delivered_message_by_message(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        client = Http1(port)
        request = ledger_pb2.TicksRequest(count=3, interval_millis=400).SerializeToString()
        try:
            status, head = await client.send(f"{LEDGER}/Ticks", body_of(request, text=True), TEXT)
            assert status == 200
            assert head["transfer-encoding"] == "chunked"  # no length: nothing is held to count it
            first = unbase64(await client.chunk(head))
            # The first tick arrives alone, while the service is still sleeping before the next.
            assert first[0] == 0
            assert ledger_pb2.Tick.FromString(first[5:]).n == 0
            assert len(first) == 5 + struct.unpack(">I", first[1:5])[0]
            rest = [first]
            while chunk := await client.chunk(head):
                rest.append(unbase64(chunk))
        finally:
            await client.close()
        answer = parse(WebAnswer(status, {"content-type": WEB}, rest))
        assert [ledger_pb2.Tick.FromString(m).n for m in answer.messages] == [0, 1, 2]
        assert answer.code == 0
        assert len(rest) >= 4  # three messages and the trailer frame, each written when it came


async def test_server_streaming_over_http2_arrives_before_the_stream_ends(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        request = ledger_pb2.TicksRequest(count=3, interval_millis=400).SerializeToString()
        async with (
            httpx.AsyncClient(http1=False, http2=True) as client,
            client.stream(
                "POST",
                f"http://127.0.0.1:{port}{LEDGER}/Ticks",
                content=body_of(request),
                headers={"content-type": WEB},
            ) as reply,
        ):
            data = reply.aiter_raw()
            first = await anext(data)
            # The first tick, whole and alone: the service is still sleeping before the next.
            assert first[0] == 0
            assert len(first) == 5 + struct.unpack(">I", first[1:5])[0]
            assert ledger_pb2.Tick.FromString(first[5:]).n == 0
            chunks = [first, *[chunk async for chunk in data]]
        answer = parse(WebAnswer(reply.status_code, dict(reply.headers), chunks))
        assert [ledger_pb2.Tick.FromString(m).n for m in answer.messages] == [0, 1, 2]
        assert answer.code == 0


async def test_a_deadline_passing_mid_stream_ends_with_deadline_exceeded(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        request = ledger_pb2.TicksRequest(count=20, interval_millis=100).SerializeToString()
        answer = await Http1(port).call(
            f"{LEDGER}/Ticks", body_of(request, text=True), TEXT, grpc_timeout="450m"
        )
        assert 1 <= len(answer.messages) < 20  # messages went out, then the deadline
        assert answer.code == 4  # DEADLINE_EXCEEDED, as the body's trailer frame


async def test_a_service_error_is_in_the_trailer_frame(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        entry = ledger_pb2.Entry(account="").SerializeToString()
        for text in (False, True):
            answer = await Http1(port).call(f"{LEDGER}/Record", body_of(entry, text), TEXT if text else WEB)
            assert answer.status == 200
            assert answer.messages == []
            assert answer.code == 3  # INVALID_ARGUMENT
            assert answer.message == "an entry needs an account: caf\u00e9"
            assert answer.head["grpc-status"] == "3"  # trailers-only: in the headers too


@pytest.fixture
async def tokens() -> AsyncIterator[Issuer]:
    async with issuer() as found:
        yield found


async def test_a_missing_token_is_unauthenticated_in_grpc_web_form(ledger: Backend, tokens: Issuer) -> None:
    auth = {"jwks_url": tokens.jwks_url, "issuer": "https://security.test", "audience": "ledger-gw"}
    async with gateway(web_config(ledger, auth={"mode": "required"}, top={"auth": auth})) as port:
        answer = await Http1(port).call(f"{LEDGER}/Whoami", body_of(b"", text=True), TEXT)
        assert answer.status == 200
        assert answer.head["content-type"] == TEXT
        assert answer.code == 16  # UNAUTHENTICATED
        assert answer.message
        assert "www-authenticate" in answer.head
        assert ledger.ledger.metadata == []  # never reached the service
        good = tokens.token(aud="ledger-gw", jti=uuid.uuid4().hex)
        passed = await Http1(port).call(f"{LEDGER}/Whoami", body_of(b""), WEB, authorization=f"Bearer {good}")
        assert passed.code == 0


async def test_an_unreachable_service_is_unavailable() -> None:
    async with backend() as stopped:
        down = stopped.port
    async with gateway(web_config(None, port=down)) as port:
        answer = await Http1(port).call(f"{LEDGER}/Whoami", body_of(b""), WEB)
        assert answer.status == 200
        assert answer.head["content-type"] == WEB
        assert answer.code == 14  # UNAVAILABLE
        assert answer.frames == 1


async def test_a_rate_limit_is_resource_exhausted_in_grpc_web_form(ledger: Backend) -> None:
    async with gateway(web_config(ledger, rate_limit={"rate": 1, "per": 60})) as port:
        first = await Http1(port).call(f"{LEDGER}/Whoami", body_of(b""), WEB)
        second = await Http1(port).call(f"{LEDGER}/Whoami", body_of(b"", text=True), TEXT)
        assert first.code == 0
        assert second.status == 200
        assert second.code == 8  # RESOURCE_EXHAUSTED
        assert "retry-after" in second.head
        assert len(ledger.ledger.metadata) == 1


async def test_a_body_growing_over_the_limit_is_resource_exhausted(ledger: Backend) -> None:
    # Sent chunked, the body passes the limit while the gateway reads it (a Content-Length over
    # the limit is refused by the HTTP server before any route, as for every request).
    cfg = web_config(ledger, top={"limits": {"max_body_bytes": 64}})
    async with gateway(cfg) as port:
        big = body_of(ledger_pb2.Entry(account="x" * 100, amount=1).SerializeToString(), text=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST {LEDGER}/Record HTTP/1.1\r\nhost: gateway\r\ncontent-type: {TEXT}\r\n"
        writer.write(head.encode() + b"transfer-encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(big), big))
        answer = await reader.read()  # the gateway closes: the body was not read to its end
        writer.close()
        head_part, _, body = answer.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 200")
        assert b"content-type: application/grpc-web-text" in head_part
        assert b"grpc-status:8\r\n" in unbase64(body)
        assert ledger.ledger.balances == {}


async def test_no_route_is_unimplemented_in_grpc_web_form(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        answer = await Http1(port).call("/shop.v1.Orders/Get", body_of(b"", text=True), TEXT)
        assert answer.status == 200
        assert answer.code == 12


async def test_a_deadline_passed_is_deadline_exceeded(ledger: Backend) -> None:
    async with gateway(web_config(ledger)) as port:
        wait = ledger_pb2.WaitRequest(millis=3000).SerializeToString()
        answer = await Http1(port).call(f"{LEDGER}/Wait", body_of(wait), WEB, grpc_timeout="200m")
        assert answer.code == 4


_ENTRY = frame(ledger_pb2.Entry(account="acme", amount=5).SerializeToString())


@pytest.mark.parametrize(
    ("body", "content_type", "said"),
    [
        (b"AAAA$$$", TEXT, "base64"),
        (base64.b64encode(_ENTRY)[:-3], TEXT, "base64"),  # a piece not a multiple of 4
        (_ENTRY[:3], WEB, "cut short"),  # a frame header cut
        (b"\0" + struct.pack(">I", 1000) + _ENTRY[5:], WEB, "says 1000 bytes"),  # a length past the body
        (_ENTRY + b"\0\0", WEB, "cut short"),  # a good frame, then a cut one
        (b"\x80" + _ENTRY[1:], WEB, "trailer frame"),  # only a server sends one
        (base64.b64encode(b"\0" + struct.pack(">I", 99) + b"x"), TEXT, "says 99 bytes"),
    ],
)
async def test_a_malformed_body_is_invalid_argument_and_never_forwarded(
    ledger: Backend, body: bytes, content_type: str, said: str
) -> None:
    async with gateway(web_config(ledger)) as port:
        answer = await Http1(port).call(f"{LEDGER}/Record", body, content_type)
        assert answer.status == 200
        assert answer.head["content-type"].startswith(content_type)
        assert answer.code == 3  # INVALID_ARGUMENT
        assert said in answer.message
        assert ledger.ledger.balances == {}  # the service saw nothing, not half a call


async def test_cors_preflight_and_exposed_status(ledger: Backend) -> None:
    cors = {"allow_origins": [ORIGIN], "allow_headers": ["authorization"]}
    async with gateway(web_config(ledger, cors=cors)) as port:
        client = Http1(port)
        asked = "content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization"
        try:
            status, head = await client.send(
                f"{LEDGER}/Record",
                b"",
                "",
                {
                    "origin": ORIGIN,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": asked,
                },
                method="OPTIONS",
            )
        finally:
            await client.close()
        assert status == 204
        assert head["access-control-allow-origin"] == ORIGIN
        assert "POST" in head["access-control-allow-methods"]
        allowed = {h.strip() for h in head["access-control-allow-headers"].lower().split(",")}
        assert set(asked.split(",")) <= allowed
        entry = ledger_pb2.Entry(account="acme", amount=1).SerializeToString()
        answer = await Http1(port).call(f"{LEDGER}/Record", body_of(entry, text=True), TEXT, origin=ORIGIN)
        assert answer.code == 0
        assert answer.head["access-control-allow-origin"] == ORIGIN
        exposed = {h.strip() for h in answer.head["access-control-expose-headers"].split(",")}
        assert {"grpc-status", "grpc-message"} <= exposed
        # A route without grpc_web keeps its rule as written: the gRPC-Web headers are refused.
    plain = ledger_config(ledger, route={"cors": cors})
    async with gateway(plain) as port:
        client = Http1(port)
        try:
            status, _ = await client.send(
                f"{LEDGER}/Record",
                b"",
                "",
                {
                    "origin": ORIGIN,
                    "access-control-request-method": "POST",
                    "access-control-request-headers": asked,
                },
                method="OPTIONS",
            )
        finally:
            await client.close()
        assert status == 403


def test_grpc_web_needs_an_h2_service() -> None:
    cfg = web_config(None, port=9)
    cfg["services"]["ledger"].pop("protocol")
    with pytest.raises(ConfigError, match="grpc_web"):
        validate_config(cfg)


async def test_without_grpc_web_a_grpc_web_request_passes_untranslated(ledger: Backend) -> None:
    # The route does not opt in: the request reaches the service as sent (a service may speak
    # gRPC-Web itself) and its answer comes back as it is. grpcio takes any application/grpc*
    # type and answers in gRPC: its status in HTTP trailers, no trailer frame.
    async with gateway(ledger_config(ledger)) as port:
        entry = ledger_pb2.Entry(account="acme", amount=1).SerializeToString()
        client = Http1(port)
        try:
            status, head = await client.send(f"{LEDGER}/Record", body_of(entry), WEB, {"connection": "close"})
            assert client.reader is not None
            rest = await client.reader.read()  # to the end: the gateway closes after the answer
        finally:
            await client.close()
        assert status == 200
        assert head["content-type"] == "application/grpc"
        assert b"grpc-status: 0\r\n" in rest  # an HTTP trailer in the last chunk
        assert b"\x80\x00\x00" not in rest
        assert ledger.ledger.balances == {"acme": 1}
