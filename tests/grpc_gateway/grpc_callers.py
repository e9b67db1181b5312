"""Two ways to make a gRPC call through the gateway, each returning the same :class:`Outcome`:
a real grpcio client (HTTP/2, what gRPC clients speak) and a raw HTTP/1.1 request whose status
comes back in chunked trailers (the gateway answers gRPC over either)."""

from __future__ import annotations

import asyncio
import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol

import grpc


@dataclass
class Outcome:
    code: int  # the gRPC status code
    message: str
    replies: list[bytes] = field(default_factory=list)  # serialized messages
    trailers: dict[str, str] = field(default_factory=dict)
    http_status: int = 200


class Caller(Protocol):
    async def call(
        self,
        method: str,
        request: bytes,
        *,
        metadata: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Outcome: ...

    async def close(self) -> None: ...


def frame(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


def unframe(data: bytes) -> list[bytes]:
    out = []
    while len(data) >= 5:
        size = struct.unpack(">I", data[1:5])[0]
        out.append(data[5 : 5 + size])
        data = data[5 + size :]
    return out


class GrpcioCaller:
    """grpcio's asyncio channel, h2c to the gateway."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)

    async def call(
        self,
        method: str,
        request: bytes,
        *,
        metadata: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        # Server streaming covers unary too: every reply is collected.
        rpc: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = self.channel.unary_stream(method)
        stream = rpc(request, metadata=tuple((metadata or {}).items()), timeout=timeout)
        replies: list[bytes] = []
        try:
            async for reply in stream:
                replies.append(reply)
        except grpc.aio.AioRpcError as exc:
            trailing = {k: str(v) for k, v in (exc.trailing_metadata() or ())}
            return Outcome(exc.code().value[0], exc.details() or "", replies, trailing)
        trailing = {k: str(v) for k, v in (await stream.trailing_metadata() or ())}
        return Outcome(0, "", replies, trailing)

    async def close(self) -> None:
        await self.channel.close()


class Http1Caller:
    """One HTTP/1.1 request per call; the status from the trailers or the trailers-only head."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def call(
        self,
        method: str,
        request: bytes,
        *,
        metadata: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            body = frame(request)
            lines = [
                f"POST {method} HTTP/1.1",
                "host: gateway",
                "content-type: application/grpc",
                "te: trailers",
            ]
            lines.append(f"content-length: {len(body)}")
            if timeout is not None:
                lines.append(f"grpc-timeout: {int(timeout * 1000)}m")
            lines += [f"{k}: {v}" for k, v in (metadata or {}).items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            status_line = await reader.readline()
            http_status = int(status_line.split()[1])
            head = await _fields(reader)
            data = b""
            trailers: dict[str, str] = {}
            if head.get("transfer-encoding") == "chunked":
                while True:
                    size = int((await reader.readline()).strip(), 16)
                    if size == 0:
                        trailers = await _fields(reader)
                        break
                    data += await reader.readexactly(size)
                    await reader.readexactly(2)
            else:
                data = await reader.readexactly(int(head.get("content-length", "0")))
        finally:
            writer.close()
        fields = {**head, **trailers}
        code = int(fields.get("grpc-status", "2" if http_status == 200 else "14"))
        message = urllib.parse.unquote(fields.get("grpc-message", ""))
        return Outcome(code, message, unframe(data), trailers, http_status)

    async def close(self) -> None:
        return None


async def _fields(reader: asyncio.StreamReader) -> dict[str, str]:
    fields: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields
