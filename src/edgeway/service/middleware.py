"""Per-request context: request id, trace context, access log, metrics, the 500 of last resort.

Pure ASGI (no ``BaseHTTPMiddleware``): it adds no task and no body buffering, and the
contextvars it sets are visible to the endpoint and everything the endpoint awaits.

For each HTTP request it

1. keeps the incoming ``X-Request-ID`` when well-formed (:func:`~edgeway.observability.ids.valid_request_id`),
   otherwise makes a new one;
2. starts a SERVER span continuing the incoming ``traceparent`` and ``tracestate`` (or a new
   trace);
3. binds request id, trace id and span id for the log formatter, and the caller's
   ``Authorization`` header for outgoing calls;
4. adds ``X-Request-ID`` and ``traceparent`` (this hop's span) to the response headers;
5. on the way out records ``http_server_*`` metrics by route template and writes one access
   log line (logger ``edgeway.access``) with method, path, route, status and duration: at INFO,
   except for health probes, ``/metrics`` scrapes and the ``quiet_paths`` a service names (feeds
   its peers poll), which are logged at DEBUG so the default level has no line per poll.

An exception that escapes the app is logged with its traceback (request id bound) and answered
with an RFC 9457 500 that reveals nothing; if the response had already started the exception is
re-raised so the server drops the connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeway.observability.ids import new_request_id, valid_request_id
from edgeway.observability.logs import request_id_var, span_id_var, trace_id_var
from edgeway.observability.metrics import Metrics
from edgeway.observability.tracing import REQUEST_ID_ATTRIBUTE, Tracing, span_traceparent
from edgeway.service.problems import internal_error_response

__all__ = ["QUIET_PATHS", "RequestContextMiddleware", "incoming_authorization"]

incoming_authorization: ContextVar[str | None] = ContextVar("edgeway_incoming_authorization", default=None)

_access = logging.getLogger("edgeway.access")
_errors = logging.getLogger("edgeway.service")
_UNMATCHED = "<unmatched>"
# Probes and scrapes every few seconds would drown the access log: logged at DEBUG.
QUIET_PATHS = frozenset({"/health/live", "/health/ready", "/metrics"})


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        tracing: Tracing,
        access_log: bool = True,
        quiet_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.tracing = tracing
        self.access_log = access_log
        self.quiet_paths = QUIET_PATHS | frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id: bytes | None = None
        traceparent: bytes | None = None
        tracestate: bytes | None = None
        authorization: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value
            elif name == b"traceparent":
                traceparent = value
            elif name == b"tracestate":
                tracestate = value
            elif name == b"authorization":
                authorization = value
        if request_id is None or not valid_request_id(request_id):
            request_id = new_request_id()
        rid = request_id.decode("ascii")

        method: str = scope["method"]
        span = self.tracing.start_server_span(f"{method} {scope['path']}", traceparent, tracestate)
        own = span_traceparent(span)
        tokens = (
            request_id_var.set(rid),
            trace_id_var.set(own.trace_id.decode()),
            span_id_var.set(own.parent_id.decode()),
            incoming_authorization.set(authorization.decode("latin-1") if authorization else None),
        )
        extra_headers = [(b"x-request-id", request_id), (b"traceparent", own.encode())]
        status = 500
        started = False

        async def send_with_context(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        self.metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            with trace.use_span(span, end_on_exit=False):
                await self.app(scope, receive, send_with_context)
        except Exception as exc:
            span.record_exception(exc)
            _errors.error("unhandled error in %s %s", method, scope["path"], exc_info=exc)
            if started:
                raise
            status = 500
            response = internal_error_response(scope["path"])
            await response(scope, receive, send_with_context)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.in_flight.dec()
            route = _route_template(scope)
            self.metrics.observe_request(method, route, status, seconds)
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", route)
            span.set_attribute(REQUEST_ID_ATTRIBUTE, rid)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            if route != _UNMATCHED:
                span.update_name(f"{method} {route}")
            span.end()
            level = logging.DEBUG if scope["path"] in self.quiet_paths else logging.INFO
            if self.access_log and _access.isEnabledFor(level):
                _access.log(
                    level,
                    "%s %s %d",
                    method,
                    scope["path"],
                    status,
                    extra=_access_fields(scope, route, status, seconds),
                )
            incoming_authorization.reset(tokens[3])
            span_id_var.reset(tokens[2])
            trace_id_var.reset(tokens[1])
            request_id_var.reset(tokens[0])


def _route_template(scope: Scope) -> str:
    # The router writes the matched route into the scope; its template (not the raw path)
    # keeps metric label cardinality bounded.
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return str(template) if template else _UNMATCHED


def _access_fields(scope: Scope, route: str, status: int, seconds: float) -> dict[str, Any]:
    client = scope.get("client")
    return {
        "kind": "access",
        "method": scope["method"],
        "path": scope["path"],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000.0, 3),
        "client": client[0] if client else None,
    }
