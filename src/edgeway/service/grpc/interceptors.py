"""What every gRPC call a kit service serves goes through: the HTTP side's cross-cutting work.

One server interceptor, :class:`KitServerInterceptor`, wraps each method's handler (once per
method, cached) so that for every call it

1. keeps the caller's ``x-request-id`` when well-formed, otherwise makes one; continues the
   caller's trace (``traceparent``/``tracestate`` metadata) in a SERVER span named like the
   OpenTelemetry RPC conventions (``shop.inventory.v1.Inventory/Reserve``, ``rpc.*`` attributes);
   binds request id, trace id and span id for the log lines, and the caller's ``authorization``
   for the kit's outgoing calls (HTTP and gRPC), exactly as the HTTP middleware does;
2. puts ``x-request-id`` and ``traceparent`` (this hop's span) in the trailing metadata of the
   answer, whatever its status (a handler that sets trailing metadata of its own keeps ours);
3. runs the handler under the caller's deadline (``grpc-timeout``; gRPC itself cancels the
   handler when it passes): :func:`edgeway.service.deadline.remaining` and the kit's clients
   see it, so calls made from the handler pass the remaining budget on;
4. makes the call's metadata and caller available to the handler
   (:func:`edgeway.service.grpc.caller`, :mod:`edgeway.service.grpc.context`);
5. reads the request itself (unary requests), so a body that is not the method's message is
   answered ``INVALID_ARGUMENT`` naming the problem, not gRPC's ``UNKNOWN``; a streamed message
   that does not parse raises inside the handler, whose transaction then rolls back;
6. answers what the handler raises with a status code and rich details
   (:mod:`edgeway.service.grpc.errors`); an unexpected exception is logged with its traceback and
   answered ``INTERNAL`` with nothing of the internals;
7. records ``grpc_server_handled_total`` (by service, method, type, code),
   ``grpc_server_handling_seconds`` and ``grpc_server_calls_in_flight`` in the kit's registry,
   and writes one access line in the kit's log schema (logger ``edgeway.access``, ``kind:
   "access"``, ``protocol: "grpc"``, ``path`` the method, ``status`` the HTTP status its code
   stands for, ``grpc_code``, ``duration_ms``, ``client``); health checks and reflection at DEBUG
   like the HTTP probes.

Handlers must be ``async`` (coroutines or async generators): a kit service serves on its event
loop, never a thread pool (:class:`~edgeway.service.grpc.server.GrpcServer` refuses others).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeAlias, cast

import grpc
from grpc.aio import AbortError
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from edgeway.observability.ids import new_request_id, valid_request_id
from edgeway.observability.logs import request_id_var, span_id_var, trace_id_var
from edgeway.observability.metrics import Metrics
from edgeway.observability.tracing import REQUEST_ID_ATTRIBUTE, Tracing, span_traceparent
from edgeway.service.deadline import deadline_scope
from edgeway.service.grpc.context import GrpcCall, _current
from edgeway.service.grpc.errors import DETAILS_KEY, answer_for, http_status, rich_status
from edgeway.service.identity import IdentityConfig
from edgeway.service.middleware import incoming_authorization

__all__ = ["QUIET_SERVICES", "KitServerInterceptor"]

_access = logging.getLogger("edgeway.access")
_errors = logging.getLogger("edgeway.service")

# Probes and tools poll these: their calls are access-logged at DEBUG, like /health/ready.
QUIET_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

# Generic in the type stubs only: spelled as strings so nothing subscripts them at run time.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class _Method:
    """What is fixed per method: names and labels, computed once."""

    __slots__ = (
        "handled_ok",
        "kind",
        "latency",
        "method",
        "name",
        "quiet",
        "service",
        "span_attributes",
        "span_name",
    )

    def __init__(self, method: str, kind: str, quiet: frozenset[str], owner: KitServerInterceptor) -> None:
        self.method = method  # "/pkg.Service/Method"
        service, _, name = method.lstrip("/").rpartition("/")
        self.service = service
        self.name = name
        self.kind = kind
        self.span_name = f"{service}/{name}"
        # Given at the span's start: one call rather than a set_attribute each (measured).
        self.span_attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        self.quiet = service in quiet
        # The children of the common outcome, looked up once rather than per call.
        self.handled_ok = owner.handled.labels(service, name, kind, "OK")
        self.latency = owner.latency.labels(service, name, kind)


class _Serving:
    """The kit's state around one call: opened before the handler, closed after it."""

    __slots__ = ("_tokens", "call", "code", "deadline", "method", "owner", "span", "started")

    def __init__(self, owner: KitServerInterceptor, method: _Method, context: Context) -> None:
        self.owner = owner
        self.method = method
        metadata: dict[str, str] = {}
        for key, value in context.invocation_metadata() or ():
            if isinstance(value, str):
                metadata[key] = value
        raw_id = metadata.get("x-request-id", "").encode("latin-1")
        request_id = (raw_id if raw_id and valid_request_id(raw_id) else new_request_id()).decode("ascii")
        traceparent = metadata.get("traceparent")
        tracestate = metadata.get("tracestate")
        self.span = owner.tracing.start_server_span(
            method.span_name,
            traceparent.encode("latin-1") if traceparent else None,
            tracestate.encode("latin-1") if tracestate else None,
            method.span_attributes,
        )
        own = span_traceparent(self.span)
        self.call = GrpcCall(method.method, metadata, request_id, context, owner.identity)
        # Trailing metadata set now travels with any status, an abort's included (grpc.aio uses
        # it when abort() is given none).
        context.set_trailing_metadata((("x-request-id", request_id), ("traceparent", own.encode().decode())))
        budget = cast(float | None, context.time_remaining())
        self.deadline = deadline_scope(budget)
        self.deadline.__enter__()
        self._tokens = (
            request_id_var.set(request_id),
            trace_id_var.set(own.trace_id.decode()),
            span_id_var.set(own.parent_id.decode()),
            incoming_authorization.set(metadata.get("authorization")),
            _current.set(self.call),
            otel_context.attach(trace.set_span_in_context(self.span)),
        )
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()
        owner.in_flight.inc()

    async def fail(self, exc: Exception, context: Context) -> None:
        """Answer ``exc`` (raised by the handler) with its status; raises grpc's AbortError."""
        answer = answer_for(exc, self.owner.service)
        self.code = answer.code
        if answer.unexpected:
            self.span.record_exception(exc)
            _errors.error("unhandled error in gRPC %s", self.method.method, exc_info=exc)
        elif answer.code is grpc.StatusCode.INTERNAL:
            self.span.record_exception(exc)
        trailing = (
            *_ours(context),
            (DETAILS_KEY, rich_status(answer.code, answer.message, answer.details, self.call.request_id)),
        )
        await context.abort(answer.code, answer.message, trailing)

    def aborted(self, context: Context) -> None:
        """The handler ended the call itself (``context.abort``)."""
        self.code = _code(context) or grpc.StatusCode.UNKNOWN

    def cancelled(self, context: Context) -> None:
        """gRPC cancelled the handler: the deadline passed, or the client cancelled or went away."""
        remaining = cast(float | None, context.time_remaining())
        self.code = (
            grpc.StatusCode.DEADLINE_EXCEEDED
            if remaining is not None and remaining <= 0
            else grpc.StatusCode.CANCELLED
        )

    def close(self, context: Context) -> None:
        owner, method, span = self.owner, self.method, self.span
        seconds = time.perf_counter() - self.started
        code = self.code
        if code is grpc.StatusCode.OK:
            set_code = _code(context)
            if set_code is not None:
                code = set_code  # context.set_code(...) and a return
            _keep_ours(context, self.call.request_id)
        owner.in_flight.dec()
        if code is grpc.StatusCode.OK:
            method.handled_ok.inc()
        else:
            owner.handled.labels(method.service, method.name, method.kind, code.name).inc()
        method.latency.observe(seconds)
        span.set_attributes(
            {"rpc.grpc.status_code": code.value[0], REQUEST_ID_ATTRIBUTE: self.call.request_id}
        )
        if http_status(code) >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        level = logging.DEBUG if method.quiet else logging.INFO
        if owner.access_log and _access.isEnabledFor(level):
            _access.log(
                level,
                "grpc %s %s",
                method.method,
                code.name,
                extra={
                    "kind": "access",
                    "protocol": "grpc",
                    "method": "POST",
                    "path": method.method,
                    "route": method.method,
                    "status": http_status(code),
                    "grpc_code": code.name,
                    "duration_ms": round(seconds * 1000.0, 3),
                    "client": _client_address(context),
                },
            )
        tokens = self._tokens
        # An async generator closed from elsewhere (its consumer gone) resets in another context:
        # nothing of this call is bound there, so there is nothing to undo.
        with contextlib.suppress(ValueError):
            otel_context.detach(tokens[5])
            _current.reset(tokens[4])
            incoming_authorization.reset(tokens[3])
            span_id_var.reset(tokens[2])
            trace_id_var.reset(tokens[1])
            request_id_var.reset(tokens[0])
        with contextlib.suppress(ValueError):
            self.deadline.__exit__(None, None, None)


def _code(context: Context) -> grpc.StatusCode | None:
    return cast(grpc.StatusCode | None, context.code())


def _ours(context: Context) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((k, v) for k, v in context.trailing_metadata() or () if k in ("x-request-id", "traceparent"))


def _keep_ours(context: Context, request_id: str) -> None:
    # A handler's set_trailing_metadata replaced ours: add them back.
    current = tuple(context.trailing_metadata() or ())
    if not any(k == "x-request-id" for k, _ in current):
        context.set_trailing_metadata((*current, ("x-request-id", request_id)))


def _client_address(context: Context) -> str | None:
    peer = context.peer()  # "ipv4:10.0.0.5:51234", "ipv6:[::1]:51234", "unix:/path"
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return peer or None


class KitServerInterceptor(grpc.aio.ServerInterceptor):
    """See the module docstring."""

    def __init__(
        self,
        service: str,
        *,
        metrics: Metrics,
        tracing: Tracing,
        identity: IdentityConfig | None,
        access_log: bool = True,
        quiet_services: Iterable[str] = QUIET_SERVICES,
    ) -> None:
        self.service = service
        self.tracing = tracing
        self.identity = identity
        self.access_log = access_log
        self._quiet = frozenset(quiet_services)
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}
        labels = ("grpc_service", "grpc_method", "grpc_type")
        self.handled = metrics.counter(
            "grpc_server_handled_total",
            "gRPC calls served, by service, method, type and status code.",
            (*labels, "grpc_code"),
        )
        self.latency = metrics.histogram(
            "grpc_server_handling_seconds", "Time from a gRPC call's arrival to its status.", labels
        )
        self.in_flight = metrics.gauge("grpc_server_calls_in_flight", "gRPC calls being served now.")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # gRPC answers UNIMPLEMENTED
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, name: str, handler: Handler) -> Handler:
        if handler.request_streaming and handler.response_streaming:
            return self._bidi(_Method(name, "bidi_stream", self._quiet, self), handler)
        if handler.request_streaming:
            return self._client_stream(_Method(name, "client_stream", self._quiet, self), handler)
        if handler.response_streaming:
            return self._server_stream(_Method(name, "server_stream", self._quiet, self), handler)
        return self._unary(_Method(name, "unary", self._quiet, self), handler)

    def _unary(self, method: _Method, handler: Handler) -> Handler:
        inner = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)
        deserialize = handler.request_deserializer
        serialize = handler.response_serializer

        async def behaviour(raw: bytes, context: Context) -> bytes:
            serving = _Serving(self, method, context)
            try:
                request = deserialize(raw) if deserialize is not None else raw
                response = await inner(request, context)
                if response is None and _code(context) not in (None, grpc.StatusCode.OK):
                    return b""  # set_code(...) and no message: gRPC sends the status alone
                return serialize(response) if serialize is not None else cast(bytes, response)
            except AbortError:
                serving.aborted(context)
                raise
            except asyncio.CancelledError:
                serving.cancelled(context)
                raise
            except Exception as exc:
                await serving.fail(exc, context)
                raise  # not reached: fail() aborts
            finally:
                serving.close(context)

        # The kit parses the request and serializes the answer itself (see the module docstring).
        return grpc.unary_unary_rpc_method_handler(behaviour)

    def _server_stream(self, method: _Method, handler: Handler) -> Handler:
        inner = cast(Callable[[Any, Context], Any], handler.unary_stream)
        deserialize = handler.request_deserializer

        async def behaviour(raw: bytes, context: Context) -> AsyncIterator[Any]:
            serving = _Serving(self, method, context)
            try:
                request = deserialize(raw) if deserialize is not None else raw
                produced = inner(request, context)
                if hasattr(produced, "__aiter__"):
                    async for message in produced:
                        yield message
                else:
                    await produced  # a handler that writes with context.write()
            except AbortError:
                serving.aborted(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                serving.cancelled(context)
                raise
            except Exception as exc:
                await serving.fail(exc, context)
                raise
            finally:
                serving.close(context)

        return grpc.unary_stream_rpc_method_handler(
            behaviour, response_serializer=handler.response_serializer
        )

    def _client_stream(self, method: _Method, handler: Handler) -> Handler:
        inner = cast(Callable[[Any, Context], Awaitable[Any]], handler.stream_unary)
        serialize = handler.response_serializer

        async def behaviour(requests: AsyncIterator[Any], context: Context) -> bytes:
            serving = _Serving(self, method, context)
            try:
                response = await inner(requests, context)
                if response is None and _code(context) not in (None, grpc.StatusCode.OK):
                    return b""
                return serialize(response) if serialize is not None else cast(bytes, response)
            except AbortError:
                serving.aborted(context)
                raise
            except asyncio.CancelledError:
                serving.cancelled(context)
                raise
            except Exception as exc:
                await serving.fail(exc, context)
                raise
            finally:
                serving.close(context)

        return grpc.stream_unary_rpc_method_handler(
            behaviour, request_deserializer=handler.request_deserializer
        )

    def _bidi(self, method: _Method, handler: Handler) -> Handler:
        inner = cast(Callable[[Any, Context], Any], handler.stream_stream)

        async def behaviour(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            serving = _Serving(self, method, context)
            try:
                produced = inner(requests, context)
                if hasattr(produced, "__aiter__"):
                    async for message in produced:
                        yield message
                else:
                    await produced
            except AbortError:
                serving.aborted(context)
                raise
            except (asyncio.CancelledError, GeneratorExit):
                serving.cancelled(context)
                raise
            except Exception as exc:
                await serving.fail(exc, context)
                raise
            finally:
                serving.close(context)

        return grpc.stream_stream_rpc_method_handler(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
