"""The ledger the kit's gRPC tests serve (protos/kittest/v1/ledger.proto): a kit ``Service`` with
a database, run in the test's process (:func:`build`) or as a process of its own
(``python tests/service/grpc_ledger.py``, settings from ``EDGEWAY_*``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from fastapi import FastAPI
from kittest.v1 import ledger_pb2, ledger_pb2_grpc
from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, func, insert, select

from edgeway.observability.logs import current_request_id, current_trace_id
from edgeway.service import Problem, Service, ServiceSettings
from edgeway.service.deadline import remaining
from edgeway.service.grpc import caller, peer_certificate

Context = grpc.aio.ServicerContext[Any, Any]

metadata = MetaData()
entries = Table(
    "entries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String, nullable=False),
    Column("amount", BigInteger, nullable=False),
)


class Ledger(ledger_pb2_grpc.LedgerServicer):
    def __init__(self, service: Service, instance: str) -> None:
        self.service = service
        self.instance = instance
        self.seen: list[str] = []  # what the handlers saw happen to them ("cancelled")

    async def Record(self, request: ledger_pb2.Entry, context: Context) -> ledger_pb2.Receipt:
        if not request.account:
            raise Problem(422, "an entry needs an account", errors=[{"loc": ["account"], "msg": "required"}])
        if request.account == "explode":
            raise RuntimeError("database password is hunter2")  # must not reach the caller
        async with self.service.transaction() as session:
            await session.execute(insert(entries).values(account=request.account, amount=request.amount))
        return ledger_pb2.Receipt(count=1)

    async def Import(self, request_iterator: Any, context: Context) -> ledger_pb2.Receipt:
        count = 0
        async with self.service.transaction() as session:
            async for entry in request_iterator:
                await session.execute(insert(entries).values(account=entry.account, amount=entry.amount))
                count += 1
        return ledger_pb2.Receipt(count=count)

    async def Balance(self, request: ledger_pb2.BalanceRequest, context: Context) -> ledger_pb2.BalanceReply:
        async with self.service.db.sessions() as session:
            row = (
                await session.execute(
                    select(func.coalesce(func.sum(entries.c.amount), 0), func.count()).where(
                        entries.c.account == request.account
                    )
                )
            ).one()
        if row[1] == 0 and request.account == "missing":
            raise Problem(404, f"no account {request.account!r}", type="https://kittest/no-account")
        return ledger_pb2.BalanceReply(balance=int(row[0]), entries=int(row[1]))

    async def Whoami(self, request: ledger_pb2.WhoamiRequest, context: Context) -> ledger_pb2.WhoamiReply:
        who = await caller()
        cert = peer_certificate()
        left = remaining()
        return ledger_pb2.WhoamiReply(
            subject=who.subject,
            roles=sorted(who.roles),
            source=who.source,
            request_id=current_request_id() or "",
            trace_id=current_trace_id() or "",
            deadline_left=-1.0 if left is None else left,
            client_cert=cert.subject if cert is not None else "",
            instance=self.instance,
        )

    async def Relay(self, request: ledger_pb2.WhoamiRequest, context: Context) -> ledger_pb2.WhoamiReply:
        peer = self.service.kit.grpc_client("peer-ledger", ledger_pb2_grpc.LedgerStub)
        return await peer.Whoami(ledger_pb2.WhoamiRequest())

    async def Wait(self, request: ledger_pb2.WaitRequest, context: Context) -> ledger_pb2.WaitReply:
        self.seen.append("waiting")
        try:
            await asyncio.sleep(request.millis / 1000)
        except asyncio.CancelledError:
            self.seen.append("cancelled")
            raise
        return ledger_pb2.WaitReply(instance=self.instance)

    async def Ticks(
        self, request: ledger_pb2.TicksRequest, context: Context
    ) -> AsyncIterator[ledger_pb2.Tick]:
        for n in range(request.count):
            yield ledger_pb2.Tick(n=n, instance=self.instance)
            await asyncio.sleep(request.interval_millis / 1000)


def build(
    settings: ServiceSettings, *, instance: str = "ledger", **app_options: Any
) -> tuple[FastAPI, Ledger]:
    """The ledger's app and servicer (``settings`` say its ports, database, identity...)."""
    service = Service("ledger", metadata, settings)
    ledger = Ledger(service, instance)
    app_options.setdefault("configure_logging", False)
    app = service.create_app(grpc=[ledger], **app_options)
    return app, ledger


if __name__ == "__main__":
    settings = ServiceSettings.load()
    app, _ = build(settings, instance=settings.instance_id or "ledger", configure_logging=True)
    app.state.service.run(app)
