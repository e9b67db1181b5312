"""A gRPC method as a call of an aggregate endpoint (``grpc`` on a call).

The aggregate's executor runs every call through the same small interface as its HTTP
exchanges (:class:`~edgeway.gateway.upstream.call.UpstreamCall`): start now, ``reply()`` later,
``fail()`` at the deadline, ``close()`` when abandoned. :class:`GrpcPending` is that interface
over a task making one unary call (:func:`.invoker.call_unary`), and its reply is what an HTTP
service would have answered: 200 with the response message as JSON, or for an error status the
HTTP status it stands for with a problem body (``title``, ``detail``, ``grpc_status``) — so
optional, required, fallback and ``_meta`` behave exactly as for HTTP calls. A deadline that
passes (the call's ``timeout``, the service's ``timeouts.total``, or what is left of the
endpoint's ``deadline``, whichever is first) is a timeout, 504; no reachable instance is 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf.message import Message

from edgeway.gateway.actions.transcode.descriptors import MethodInfo
from edgeway.gateway.actions.transcode.invoker import GrpcChannels, GrpcFailure, call_unary
from edgeway.gateway.actions.transcode.messages import BadInput, JsonOptions, build_request, render_response
from edgeway.gateway.actions.transcode.status import failure_members
from edgeway.gateway.telemetry.meters import ServiceMeter
from edgeway.gateway.upstream.call import ServiceReply
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.http.errors import UpstreamError, UpstreamReset
from edgeway.http.headers import reason_phrase
from edgeway.resilience.guard import ServiceGuard

__all__ = ["BadInput", "GrpcCaller", "GrpcPending"]


class GrpcPending:
    """One gRPC call of an aggregate, started: the executor's view of it."""

    __slots__ = ("_loop", "error", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, work: Any) -> None:
        self._loop = loop
        self.error: UpstreamError | None = None
        self.task: asyncio.Task[ServiceReply] = loop.create_task(work)

    @property
    def answered(self) -> bool:
        return self.error is not None or self.task.done()

    @property
    def failed(self) -> bool:
        """Certain to have failed: no answer, or an error status."""
        if self.error is not None:
            return True
        task = self.task
        if not task.done():
            return False
        if task.cancelled() or task.exception() is not None:
            return True
        return not 200 <= task.result().status < 300

    def on_answer(self, callback: Callable[[], None]) -> None:
        if self.answered:
            self._loop.call_soon(callback)
        else:
            self.task.add_done_callback(lambda _: callback())

    async def reply(self) -> ServiceReply:
        if self.error is not None and not self.task.done():
            raise self.error
        try:
            return await self.task
        except asyncio.CancelledError:
            if self.error is not None:
                raise self.error from None
            raise

    def fail(self, exc: UpstreamError) -> None:
        """End the call with ``exc`` (the endpoint's deadline); an answer already in stays."""
        if self.task.done():
            return
        self.error = exc
        self.task.cancel()

    def close(self) -> None:
        task = self.task
        if not task.done():
            self.fail(UpstreamReset("the call was abandoned"))
        elif not task.cancelled():
            task.exception()  # retrieved: nobody may await it


@dataclass(frozen=True, slots=True)
class GrpcCaller:
    """A call's gRPC method, compiled once: what to call, where, how long, how JSON prints."""

    channels: GrpcChannels
    cluster: Cluster
    guard: ServiceGuard[Endpoint] | None
    info: MethodInfo
    timeout: float
    options: JsonOptions
    input_from_client: bool  # the call's body reads the client's request (a bad value is a 400)
    meter: ServiceMeter | None = None  # the service's metrics (None: metrics off)

    def request(self, body: bytes | None) -> Message:
        """The request message from the call's rendered JSON body; :class:`BadInput` if it does
        not fit the method's input."""
        value = orjson.loads(body) if body else {}
        return build_request(
            self.info.input_type,
            path_vars={},
            query=(),
            body=value or None,
            body_field="*",
            options=self.options,
        )

    def start(
        self,
        request: Message,
        metadata: Sequence[tuple[str, str]],
        loop: asyncio.AbstractEventLoop,
        deadline: float | None,
    ) -> GrpcPending:
        timeout = self.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - loop.time())
        return GrpcPending(loop, self._run(request, metadata, timeout))

    async def _run(
        self, request: Message, metadata: Sequence[tuple[str, str]], timeout: float
    ) -> ServiceReply:
        service = self.cluster.name
        try:
            reply = await call_unary(
                self.channels,
                self.cluster,
                self.guard,
                self.info,
                request,
                timeout=timeout,
                metadata=metadata,
                meter=self.meter,
            )
        except GrpcFailure as failure:
            transport = failure.transport_error(timeout)
            if transport is not None:
                raise transport from None
            status = failure.status
            body = {
                "title": reason_phrase(status).decode(),
                "detail": failure.details or f"{service} answered {failure.code.name}",
                **failure_members(failure),
            }
            return ServiceReply(status, [], orjson.dumps(body), failure.instance)
        value = render_response(reply, None, self.options)
        return ServiceReply(200, [], orjson.dumps(value), service)
