"""The calling side of the RPC benchmarks: one client leg in a process of its own.

A leg makes ``--calls`` calls (after ``--warmup`` unmeasured ones) from ``--concurrency``
callers sharing one client, and prints one JSON line: the caller's CPU time over the measured
calls (``time.process_time``: this process only, so the peer's work is not in it), the wall
time, and every call's latency in µs. With ``--count-bytes`` it first sends ``--byte-calls``
calls at concurrency 1 through a relay in this process that counts the bytes both ways on the
caller's connection, and reports the bytes per call.

Legs (the same call: the request of :data:`bench.rpc_peer.REQUEST`, the answer decoded):

- ``httpx``: httpx.AsyncClient as the kit used it (pool without a cap), JSON both ways;
- ``httpx_sniffio``: the same with ``sniffio`` importable (httpcore looks for it on every call;
  without it the failed import is retried each time). When it is not installed a stand-in with
  sniffio's own logic is registered, and the result says so;
- ``aiohttp``: an aiohttp ClientSession (connector without a limit);
- ``engine``: edgeway's upstream engine alone (:class:`edgeway.service.peer_http.PeerHttp`);
- ``kit``: the kit's :class:`~edgeway.service.clients.ServiceClient` (on the engine): discovery,
  breaker, retries, request id and trace headers, as a service's ``kit.client(...)`` call;
- ``grpc``: grpcio's asyncio channel, a unary call with the proto of :mod:`bench.rpc_peer`;
- ``grpc_kit``: the kit's typed gRPC client (``GrpcChannel``: discovery, breaker, CLIENT span,
  request id and trace metadata), the same stub;
- ``nats``: nats-py request-reply, msgpack both ways.

    python -m bench.rpc_client kit --url http://127.0.0.1:8001 --calls 3000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import sys
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.rpc_peer import REQUEST, SUBJECT, load_proto

LEGS = ("httpx", "httpx_sniffio", "aiohttp", "engine", "kit", "grpc", "grpc_kit", "nats")
PATH = "/stock/check"

Call = Callable[[], Awaitable[Any]]


def sniffio_stand_in() -> bool:
    """Make ``import sniffio`` succeed: the real package when installed (False), else a module
    with sniffio 1.3's ``current_async_library`` logic (True)."""
    if importlib.util.find_spec("sniffio") is not None:
        return False
    import threading
    from contextvars import ContextVar

    module = types.ModuleType("sniffio")
    local = threading.local()
    cvar: ContextVar[str | None] = ContextVar("current_async_library_cvar", default=None)

    class AsyncLibraryNotFoundError(RuntimeError):
        pass

    def current_async_library() -> str:
        value = getattr(local, "name", None) or cvar.get()
        if value is not None:
            return str(value)
        if "asyncio" in sys.modules:
            from asyncio import current_task

            with contextlib.suppress(RuntimeError):
                if current_task() is not None:
                    return "asyncio"
        raise AsyncLibraryNotFoundError("unknown async library, or not in async context")

    module.current_async_library = current_async_library  # type: ignore[attr-defined]
    module.AsyncLibraryNotFoundError = AsyncLibraryNotFoundError  # type: ignore[attr-defined]
    module.current_async_library_cvar = cvar  # type: ignore[attr-defined]
    module.thread_local = local  # type: ignore[attr-defined]
    sys.modules["sniffio"] = module
    return True


@contextlib.asynccontextmanager
async def client(leg: str, url: str, proto_dir: Path | None) -> AsyncIterator[Call]:
    """A ``call()`` for ``leg`` against the peer at ``url``, and its client closed after."""
    if leg in ("httpx", "httpx_sniffio"):
        import httpx

        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60.0)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=5.0) as http:

            async def call_httpx() -> Any:
                return (await http.post(PATH, json=REQUEST)).json()

            yield call_httpx
    elif leg == "aiohttp":
        import aiohttp

        async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=0)) as session:

            async def call_aiohttp() -> Any:
                async with session.post(PATH, json=REQUEST) as response:
                    return await response.json()

            yield call_aiohttp
    elif leg == "engine":
        import orjson

        from edgeway.service.peer_http import PeerHttp

        engine = PeerHttp()
        headers = {"content-type": "application/json"}

        async def call_engine() -> Any:
            _, _, body = await engine.send("POST", url, PATH, headers, orjson.dumps(REQUEST), 5.0)
            return orjson.loads(body)

        try:
            yield call_engine
        finally:
            await engine.aclose()
    elif leg == "kit":
        from edgeway.observability.tracing import Tracing
        from edgeway.service.clients import ServiceClient
        from edgeway.service.discovery import StaticDiscovery

        kit = ServiceClient("inventory", StaticDiscovery({"inventory": [url]}), tracing=Tracing("orders"))

        async def call_kit() -> Any:
            return (await kit.post(PATH, json=REQUEST)).json()

        try:
            yield call_kit
        finally:
            await kit.aclose()
    elif leg == "grpc":
        import grpc

        assert proto_dir is not None, "the grpc leg needs --proto-dir"
        pb2, pb2_grpc = load_proto(proto_dir)
        async with grpc.aio.insecure_channel(url.removeprefix("grpc://")) as channel:
            stub = pb2_grpc.InventoryStub(channel)

            async def call_grpc() -> Any:
                reply = await stub.Check(pb2.StockRequest(**REQUEST), timeout=5.0)
                return reply.available

            yield call_grpc
    elif leg == "grpc_kit":
        from edgeway.observability.tracing import Tracing
        from edgeway.service.discovery import StaticDiscovery
        from edgeway.service.grpc import GrpcChannel

        assert proto_dir is not None, "the grpc_kit leg needs --proto-dir"
        pb2, pb2_grpc = load_proto(proto_dir)
        kit_channel = GrpcChannel(
            "inventory", StaticDiscovery({"inventory": [url]}), tracing=Tracing("orders")
        )
        kit_stub = pb2_grpc.InventoryStub(kit_channel)

        async def call_grpc_kit() -> Any:
            reply = await kit_stub.Check(pb2.StockRequest(**REQUEST))
            return reply.available

        try:
            yield call_grpc_kit
        finally:
            await kit_channel.close()
    elif leg == "nats":
        import msgpack
        import nats

        nc = await nats.connect(url)

        async def call_nats() -> Any:
            reply = await nc.request(SUBJECT, msgpack.packb(REQUEST), timeout=5.0)
            return msgpack.unpackb(reply.data)

        try:
            yield call_nats
        finally:
            await nc.close()
    else:
        raise ValueError(f"unknown leg {leg!r}: one of {', '.join(LEGS)}")


async def measure(call: Call, calls: int, concurrency: int, warmup: int) -> dict[str, Any]:
    """``calls`` calls from ``concurrency`` callers after ``warmup`` (as many callers)."""
    await _load(call, warmup, concurrency, None)
    latencies: list[int] = []
    cpu = time.process_time()
    wall = time.perf_counter()
    await _load(call, calls, concurrency, latencies)
    return {
        "calls": calls,
        "concurrency": concurrency,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "latencies_us": latencies,
    }


async def _load(call: Call, calls: int, concurrency: int, latencies: list[int] | None) -> None:
    left = calls
    clock = time.perf_counter_ns

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            started = clock()
            await call()
            if latencies is not None:
                latencies.append((clock() - started) // 1000)

    await asyncio.gather(*(caller() for _ in range(concurrency)))


class ByteCounter:
    """A TCP relay in front of the peer counting what passes both ways."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = 0
        self.down = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def reset(self) -> None:
        self.up = self.down = 0

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_reader, peer_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, peer_writer, True), pipe(peer_reader, writer, False))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def count_bytes(leg: str, url: str, proto_dir: Path | None, calls: int) -> dict[str, float]:
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    counter = ByteCounter(host, int(port))
    relay_port = await counter.start()
    try:
        async with client(leg, f"{scheme}://127.0.0.1:{relay_port}", proto_dir) as call:
            for _ in range(20):  # connection set-up and the first exchanges out of the count
                await call()
            counter.reset()
            for _ in range(calls):
                await call()
            # a NATS publish is flushed by nats-py's flusher task: let the last one pass
            await asyncio.sleep(0.05)
    finally:
        await counter.close()
    return {"bytes_up": counter.up / calls, "bytes_down": counter.down / calls}


async def run_leg(args: argparse.Namespace) -> dict[str, Any]:
    stand_in = sniffio_stand_in() if args.leg == "httpx_sniffio" else None
    out: dict[str, Any] = {"leg": args.leg}
    if stand_in is not None:
        out["sniffio_stand_in"] = stand_in
    else:
        out["sniffio_installed"] = importlib.util.find_spec("sniffio") is not None
    if args.count_bytes:
        out.update(await count_bytes(args.leg, args.url, args.proto_dir, args.byte_calls))
        out["byte_calls"] = args.byte_calls
    async with client(args.leg, args.url, args.proto_dir) as call:
        out["runs"] = [
            await measure(call, args.calls, concurrency, args.warmup) for concurrency in args.concurrency
        ]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc_client")
    parser.add_argument("leg", choices=LEGS)
    parser.add_argument("--url", required=True)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--proto-dir", type=Path)
    parser.add_argument("--count-bytes", action="store_true")
    parser.add_argument("--byte-calls", type=int, default=200)
    args = parser.parse_args(argv)
    import uvloop

    result = uvloop.run(run_leg(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
