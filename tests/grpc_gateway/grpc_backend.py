"""A real grpcio server for the gateway's gRPC tests: the kit tests' ledger service
(protos/kittest/v1/ledger.proto) kept in memory, and the standard health service whose status
a test sets."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from kittest.v1 import ledger_pb2, ledger_pb2_grpc

Context = grpc.aio.ServicerContext[Any, Any]
LEDGER = "kittest.v1.Ledger"


@dataclass
class MemoryLedger(ledger_pb2_grpc.LedgerServicer):
    instance: str
    balances: dict[str, int] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # what handlers saw happen: "cancelled"
    metadata: list[dict[str, str]] = field(default_factory=list)  # each Whoami call's metadata

    async def Record(self, request: ledger_pb2.Entry, context: Context) -> ledger_pb2.Receipt:
        if not request.account:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an entry needs an account: caf\u00e9")
        if request.account == f"unavailable-{self.instance}":
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.instance} is draining")
        self.balances[request.account] = self.balances.get(request.account, 0) + request.amount
        return ledger_pb2.Receipt(count=1)

    async def Import(self, request_iterator: Any, context: Context) -> ledger_pb2.Receipt:
        count = 0
        async for entry in request_iterator:
            self.balances[entry.account] = self.balances.get(entry.account, 0) + entry.amount
            count += 1
        return ledger_pb2.Receipt(count=count)

    async def Balance(self, request: ledger_pb2.BalanceRequest, context: Context) -> ledger_pb2.BalanceReply:
        context.set_trailing_metadata((("x-ledger-instance", self.instance),))
        return ledger_pb2.BalanceReply(balance=self.balances.get(request.account, 0))

    async def Whoami(self, request: ledger_pb2.WhoamiRequest, context: Context) -> ledger_pb2.WhoamiReply:
        metadata = dict(context.invocation_metadata() or ())
        self.metadata.append({str(k): str(v) for k, v in metadata.items()})
        left = context.time_remaining()
        return ledger_pb2.WhoamiReply(
            subject=str(metadata.get("authorization", "")),
            request_id=str(metadata.get("x-request-id", "")),
            deadline_left=-1.0 if left is None else left,
            instance=self.instance,
        )

    async def Wait(self, request: ledger_pb2.WaitRequest, context: Context) -> ledger_pb2.WaitReply:
        try:
            await asyncio.sleep(request.millis / 1000)
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise
        return ledger_pb2.WaitReply(instance=self.instance)

    async def Relay(self, request: ledger_pb2.WhoamiRequest, context: Context) -> ledger_pb2.WhoamiReply:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no peer ledger here")
        raise AssertionError("abort raises")

    async def Ticks(
        self, request: ledger_pb2.TicksRequest, context: Context
    ) -> AsyncIterator[ledger_pb2.Tick]:
        for n in range(request.count):
            yield ledger_pb2.Tick(n=n, instance=self.instance)
            await asyncio.sleep(request.interval_millis / 1000)


@dataclass
class Backend:
    port: int
    ledger: MemoryLedger
    health: health_aio.HealthServicer
    server: grpc.aio.Server

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def seen(self) -> list[str]:
        return self.ledger.events

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.health.set("", status)
        await self.health.set(LEDGER, status)


@contextlib.asynccontextmanager
async def backend(
    instance: str = "ledger-1", tls: tuple[bytes, bytes] | None = None, max_streams: int | None = None
) -> AsyncIterator[Backend]:
    """A grpcio asyncio server on a free loopback port, serving the ledger and health;
    ``tls``: its certificate chain and key (PEM), served over TLS (ALPN h2); ``max_streams``:
    its SETTINGS_MAX_CONCURRENT_STREAMS."""
    options = [] if max_streams is None else [("grpc.max_concurrent_streams", max_streams)]
    server = grpc.aio.server(options=options)
    ledger = MemoryLedger(instance)
    ledger_pb2_grpc.add_LedgerServicer_to_server(ledger, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        chain, key = tls
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, chain)]))
    await server.start()
    running = Backend(port, ledger, health, server)
    await running.set_serving(True)
    try:
        yield running
    finally:
        await server.stop(grace=None)
