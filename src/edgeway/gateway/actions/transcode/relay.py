"""A transcoded request to a streaming method: the request messages from a JSON array, the
response messages streamed to the client as they arrive.

Client streaming (and bidirectional): the body is a JSON array, each element one request message
(as the binding's ``body`` says: the whole message, or one field of it; the path variables and
query parameters are set in every message). Every element is built before the call starts: an
element that is not a message, or an array longer than ``max_stream_messages``, is refused (400,
413) and nothing is sent, so the service never sees half a stream.

Server streaming (and bidirectional): the answer starts when the first message arrives (a status
before any message is answered as for a unary call: the problem and the HTTP status it stands
for), then each message is written as it comes (chunked on HTTP/1.1, DATA frames on HTTP/2),
framed by :mod:`.framing`, waiting for the client to read (``drain``) before taking the next.
An error status after messages cannot change the 200 already sent: the answer is cut — no
closing ``]``, no last chunk on HTTP/1.1 (the connection closes), ``RST_STREAM`` on HTTP/2 — so
no client mistakes it for a complete one, and the access log names its ``grpc_status``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from google.protobuf.message import Message

from edgeway.gateway.actions.transcode.descriptors import MethodInfo
from edgeway.gateway.actions.transcode.framing import Framing
from edgeway.gateway.actions.transcode.http_rule import Binding
from edgeway.gateway.actions.transcode.invoker import GrpcChannels, GrpcFailure
from edgeway.gateway.actions.transcode.messages import BadInput, JsonOptions, build_request, render_response
from edgeway.gateway.actions.transcode.status import failure_problem
from edgeway.gateway.actions.transcode.streaming import stream_call
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.gateway.telemetry.meters import ServiceMeter
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.resilient import Refused
from edgeway.resilience.guard import ServiceGuard

__all__ = ["StreamRelay", "stream_requests"]


def stream_requests(
    info: MethodInfo,
    *,
    path_vars: Mapping[tuple[str, ...], str],
    query: Sequence[tuple[str, str]],
    body: object,
    body_field: str,
    options: JsonOptions,
    limit: int,
) -> list[Message]:
    """A client-streaming request's messages, one per element of the body's JSON array (no
    body: none); a :class:`Rejection` for the first element that does not fit."""
    if body is None:
        elements: list[object] = []
    elif isinstance(body, list):
        elements = body
    else:
        raise Rejection(
            400,
            "Bad Request",
            f"{info.full_name} streams its requests: the body must be a JSON array of them",
        )
    if len(elements) > limit:
        raise Rejection(
            413,
            "Content Too Large",
            f"the body holds {len(elements)} messages; a stream takes at most {limit}",
        )
    out: list[Message] = []
    for index, element in enumerate(elements):
        try:
            out.append(
                build_request(
                    info.input_type,
                    path_vars=path_vars,
                    query=query,
                    body=element,
                    body_field=body_field,
                    options=options,
                )
            )
        except BadInput as exc:
            where = f"[{index}]" + (f".{exc.field}" if exc.field else "")
            raise Rejection(
                400, "Bad Request", f"element {index}: {exc}", members={"field": where, "index": index}
            ) from None
    return out


@dataclass(frozen=True, slots=True)
class StreamRelay:
    """A route's streaming calls: where they go, and how their answers print and are framed."""

    channels: GrpcChannels
    cluster: Cluster
    guard: ServiceGuard[Endpoint] | None
    timeout: float
    meter: ServiceMeter | None
    options: JsonOptions
    framing: Framing

    async def answer(
        self,
        ctx: RequestContext,
        info: MethodInfo,
        binding: Binding | None,
        requests: Sequence[Message],
        metadata: Sequence[tuple[str, str]],
    ) -> None:
        ex = ctx.ex
        service = self.cluster.name
        response_body = binding.response_body if binding is not None else None
        messages = stream_call(
            self.channels,
            self.cluster,
            self.guard,
            info,
            requests,
            timeout=self.timeout,
            metadata=metadata,
            meter=self.meter,
        )
        async with contextlib.aclosing(messages):
            try:
                first = await anext(messages, None)
            except GrpcFailure as failure:
                ex.log["grpc_status"] = failure.code.name
                raise failure_problem(failure, service) from None
            except Refused as exc:  # no instance, an open breaker, a full concurrency bound
                raise exc.rejection() from None
            ids = [(b"x-request-id", ex.request_id), (b"traceparent", ctx.traceparent)]
            if not info.server_streaming:
                # Client streaming: one answer, as a unary call's.
                assert first is not None  # a stream-unary call yields its response or fails
                value = orjson.dumps(render_response(first, response_body, self.options))
                ex.respond(200, [(b"content-type", b"application/json"), *ids], value)
                return
            framing = self.framing
            headers = [(b"content-type", framing.content_type), (b"cache-control", b"no-cache"), *ids]
            if first is None:
                ex.respond(200, headers, framing.empty)
                return
            ex.start(200, headers, None, framing.first(self._json(first, response_body)))
            try:
                async for message in messages:
                    await ex.drain()  # the client's pace: one message at a time in the gateway
                    ex.write(framing.next(self._json(message, response_body)))
            except GrpcFailure as failure:
                ex.log["grpc_status"] = failure.code.name
                ex.abort()
                return
            ex.finish(framing.end)

    def _json(self, message: Message, response_body: str | None) -> bytes:
        return orjson.dumps(render_response(message, response_body, self.options))
