"""The standard gRPC health-checking protocol (``grpc.health.v1.Health``) on the kit's readiness.

What ``GET /health/ready`` says, gRPC clients and probes (Kubernetes' ``grpc`` probe, grpcurl,
Envoy, the Go and Java clients' health checking) read as a serving status:

- ``Check`` runs the service's readiness checks (:class:`~edgeway.service.health.Health`) and
  answers ``SERVING`` when it is ready, ``NOT_SERVING`` while it starts, once shutdown has begun,
  or when a critical check fails. The service is named ``""`` (the server as a whole) or by any
  gRPC service it serves (``shop.inventory.v1.Inventory``): they share the one readiness. Any
  other name is ``NOT_FOUND``, as the protocol says;
- ``Watch`` sends the status at once, then every change, checking every ``interval`` seconds;
  an unknown name gets ``SERVICE_UNKNOWN`` and the stream stays open. Once shutdown has begun it
  sends ``NOT_SERVING`` and ends, so watchers do not hold the server's stop.
- ``List`` (the protocol's newest method) is not offered: it answers ``UNIMPLEMENTED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgeway.service.health import Health

__all__ = ["SERVICE_NAME", "HealthServicer"]

SERVICE_NAME = "grpc.health.v1.Health"
_Status: TypeAlias = int  # a HealthCheckResponse.ServingStatus value


class HealthServicer(health_pb2_grpc.HealthServicer):
    def __init__(self, health: Health, names: Iterable[str], *, interval: float = 1.0) -> None:
        self.health = health
        self.names = frozenset({"", *names})
        self.interval = interval

    async def _status(self, service: str) -> _Status:
        if service not in self.names:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        report = await self.health.run()
        return (
            health_pb2.HealthCheckResponse.SERVING
            if report.ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )

    async def Check(  # noqa: N802 (the protocol names its methods)
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in self.names:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no service named {request.service!r} here")
        return health_pb2.HealthCheckResponse(status=await self._status(request.service))

    async def Watch(  # noqa: N802
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: _Status | None = None
        while True:
            status = await self._status(request.service)
            if status != last:
                last = status
                yield health_pb2.HealthCheckResponse(status=status)
            if self.health.stopping:
                # NOT_SERVING has been said; ending the stream lets the server stop without
                # waiting out its grace for watchers (a client watches again, with backoff).
                return
            await asyncio.sleep(self.interval)
