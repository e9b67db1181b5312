"""A streaming gRPC call behind a transcoded request: the response messages as they arrive.

:func:`stream_call` serves the three streaming kinds with one shape, an async iterator of the
response messages: server streaming sends one request message, client streaming and
bidirectional send the request messages one by one (all built before the call starts, so a bad
element never leaves a stream half-sent), and a client-streaming call's single response is a
stream of one.

The call goes through the same instance choice, guard and meter as a unary one
(:class:`.invoker.CallBook`). A retry is only possible before the first response message: what
the client has been sent cannot be taken back, so a failure after it is the caller's to report.
The deadline covers the whole stream. A consumer that stops early (the client went away, its
task is cancelled, the iterator is closed) cancels the call upstream: the service's handler sees
``CANCELLED``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

import grpc
from google.protobuf.message import Message

from edgeway.gateway.actions.transcode.descriptors import MethodInfo
from edgeway.gateway.actions.transcode.invoker import CallBook, GrpcChannels, StreamStub
from edgeway.gateway.telemetry.meters import ServiceMeter
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.resilience.guard import ServiceGuard

__all__ = ["stream_call"]

_Call = (
    grpc.aio.UnaryStreamCall[Message, Message]
    | grpc.aio.StreamUnaryCall[Message, Message]
    | grpc.aio.StreamStreamCall[Message, Message]
)


def _open(
    stub: StreamStub, requests: Sequence[Message], timeout: float, metadata: tuple[tuple[str, str], ...]
) -> _Call:
    if isinstance(stub, grpc.aio.UnaryStreamMultiCallable):
        return stub(requests[0], timeout=timeout, metadata=metadata)
    # A fresh iterator per attempt: a retried call sends every message again.
    return stub(iter(requests), timeout=timeout, metadata=metadata)


async def _messages(call: _Call) -> AsyncIterator[Message]:
    if isinstance(call, grpc.aio.StreamUnaryCall):
        yield await call
        return
    while True:
        message = await call.read()
        if message is grpc.aio.EOF:
            return
        assert isinstance(message, Message)
        yield message


async def stream_call(
    channels: GrpcChannels,
    cluster: Cluster,
    guard: ServiceGuard[Endpoint] | None,
    method: MethodInfo,
    requests: Sequence[Message],
    *,
    timeout: float,
    metadata: Sequence[tuple[str, str]],
    meter: ServiceMeter | None = None,
) -> AsyncGenerator[Message, None]:
    """The response messages of streaming ``method`` called with ``requests`` (exactly one
    for a server-streaming method) on an instance of ``cluster``; :class:`.GrpcFailure` for an
    error status (before or after messages), :class:`.NoInstance` when none is available.
    Close the iterator (``contextlib.aclosing``) to end a call early."""
    book = CallBook(cluster, guard, meter, timeout)
    try:
        await book.admit()
        for attempt in itertools.count():
            ep, state = book.pick()
            stub = channels.stream_stub(cluster.name, ep, method)
            began = time.perf_counter()
            book.outcome = 0
            delivered = False
            ep.outstanding += 1
            call = _open(stub, requests, max(book.until - began, 0.001), tuple(metadata))
            try:
                async for message in _messages(call):
                    delivered = True
                    yield message
                book.outcome = 200
                return
            except grpc.aio.AioRpcError as exc:
                failure = book.failed(exc, ep, timeout)
                delay = None if delivered else book.retry_delay(method, attempt)
                if delay is None:
                    raise failure from None
            finally:
                call.cancel()  # nothing when it ended; else the consumer left: end it upstream too
                ep.outstanding -= 1
                book.attempt_over(state, ep, began)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # itertools.count() never ends
    finally:
        book.close()
