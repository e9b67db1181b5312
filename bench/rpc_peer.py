"""The answering side of the RPC benchmarks: one small request/response, three ways.

``http``: a kit service (``create_app``, uvicorn on uvloop with the kit's HTTP protocol), the
request and the answer as JSON. ``grpc``: a grpcio asyncio server with the same call as a unary
RPC, from the proto :func:`compile_proto` builds. ``grpc-kit``: the same servicer served by a kit
service (``create_app(grpc=[...])``: the kit's interceptor, health, reflection) on
``--grpc-port``. ``nats``: a NATS request-reply responder (nats-py),
both ways as msgpack. Each prints ``listening on HOST:PORT`` (the NATS responder: once its
subscription is in place, naming the broker's port) and serves until SIGTERM.

    python -m bench.rpc_peer http --port 0
    python -m bench.rpc_peer grpc --port 0 --proto-dir /tmp/x
    python -m bench.rpc_peer grpc-kit --grpc-port 40002 --proto-dir /tmp/x
    python -m bench.rpc_peer nats --url nats://127.0.0.1:40001
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.backend import announce

# The call every leg makes: check a product's stock (what the shop's BFFs ask inventory for).
REQUEST: dict[str, Any] = {"sku": "sku-00042", "qty": 2}


def answer(sku: str, qty: int) -> dict[str, Any]:
    return {"sku": sku, "available": 17, "reserved": qty, "price_cents": 1299, "warehouse": "north-2"}


PROTO = """\
syntax = "proto3";
package rpcbench;

message StockRequest {
  string sku = 1;
  int32 qty = 2;
}

message StockReply {
  string sku = 1;
  int32 available = 2;
  int32 reserved = 3;
  int64 price_cents = 4;
  string warehouse = 5;
}

service Inventory {
  rpc Check (StockRequest) returns (StockReply);
}
"""

SUBJECT = "rpcbench.inventory.check"


def compile_proto(directory: Path, name: str = "rpcbench", text: str = PROTO) -> Path:
    """Write ``text`` as ``name.proto`` into ``directory`` and compile it there with grpcio-tools
    (messages and service stubs: ``<name>_pb2``, ``<name>_pb2_grpc``); returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.proto").write_text(text)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{directory}",
            f"--python_out={directory}",
            f"--grpc_python_out={directory}",
            str(directory / f"{name}.proto"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed: {done.stderr.strip()}")
    return directory


def load_proto(directory: Path, name: str = "rpcbench") -> tuple[Any, Any]:
    """The compiled modules (``<name>_pb2``, ``<name>_pb2_grpc``) from ``directory``."""
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")


# -- the three servers -------------------------------------------------------------------------


def serve_http(host: str, port: int) -> None:
    import socket

    import uvicorn

    from edgeway.service import ServiceSettings, create_app
    from edgeway.service.http import HeadOnlyHttpTools

    app = create_app("inventory", settings=ServiceSettings(), configure_logging=False, access_log=False)

    @app.post("/stock/check")
    async def check(body: dict[str, Any]) -> dict[str, Any]:
        return answer(str(body["sku"]), int(body["qty"]))

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    announce(host, sock.getsockname()[1])
    config = uvicorn.Config(app, loop="uvloop", http=HeadOnlyHttpTools, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def serve_grpc_kit(host: str, grpc_port: int, proto_dir: Path) -> None:
    """The servicer on a kit service's gRPC port (its HTTP app on a free port beside it); the
    caller waits for the gRPC port, which the kit opens once its start-up is done."""
    import socket

    import uvicorn

    from edgeway.service import ServiceSettings, create_app
    from edgeway.service.http import HeadOnlyHttpTools

    pb2, pb2_grpc = load_proto(proto_dir)

    class Inventory(pb2_grpc.InventoryServicer):  # type: ignore[misc,name-defined]
        async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (the proto's name)
            return pb2.StockReply(**answer(request.sku, request.qty))

    settings = ServiceSettings(grpc_port=grpc_port, grpc_host=host)
    app = create_app(
        "inventory", settings=settings, configure_logging=False, access_log=False, grpc=[Inventory()]
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    config = uvicorn.Config(app, loop="uvloop", http=HeadOnlyHttpTools, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


async def serve_grpc(host: str, port: int, proto_dir: Path) -> None:
    import grpc

    pb2, pb2_grpc = load_proto(proto_dir)

    class Inventory(pb2_grpc.InventoryServicer):  # type: ignore[misc,name-defined]
        async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 (the proto's name)
            return pb2.StockReply(**answer(request.sku, request.qty))

    server = grpc.aio.server()
    pb2_grpc.add_InventoryServicer_to_server(Inventory(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    announce(host, bound)
    await _until_signalled()
    await server.stop(0.5)


async def serve_nats(url: str) -> None:
    import msgpack
    import nats

    nc = await nats.connect(url)

    async def check(msg: Any) -> None:
        request = msgpack.unpackb(msg.data)
        await msg.respond(msgpack.packb(answer(request["sku"], request["qty"])))

    await nc.subscribe(SUBJECT, cb=check)
    await nc.flush()
    host, _, port = url.removeprefix("nats://").rpartition(":")
    announce(host, int(port))
    await _until_signalled()
    await nc.drain()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rpc_peer")
    parser.add_argument("kind", choices=["http", "grpc", "grpc-kit", "nats"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--proto-dir", type=Path)
    parser.add_argument("--url", default="")
    parser.add_argument("--grpc-port", type=int, default=0)
    args = parser.parse_args(argv)
    if args.kind == "http":
        serve_http(args.host, args.port)
        return
    if args.kind == "grpc-kit":
        serve_grpc_kit(args.host, args.grpc_port, args.proto_dir)
        return
    import uvloop

    if args.kind == "grpc":
        uvloop.run(serve_grpc(args.host, args.port, args.proto_dir))
    else:
        uvloop.run(serve_nats(args.url))


if __name__ == "__main__":
    main()
