"""The service clients a Python endpoint gets: ``await req.services.catalog.get("/products")``.

Each configured service is an attribute of ``req.services``. A call goes through the same
cluster as proxy routes and aggregate calls (balancer, pools, the service's timeouts) and the
same resilience (the service's breakers, outlier ejection, retries of idempotent calls within
the retry budget, its concurrency bound), and carries the request's X-Request-ID, a child
``traceparent``, ``X-Edgeway-Deadline-Ms`` and the client headers the route forwards (identity
headers, Authorization, Accept-Language by default).

A call returns a :class:`ServiceResponse` whatever the status; ``raise_for_status()`` turns an
error status into :class:`ServiceStatusError`. No usable answer (connect error, timeout, no
instance, an open breaker) raises :class:`ServiceCallError`, whose ``code`` says which. Either
one left uncaught answers the client the way a failed required aggregate call does: the
service's 4xx passed through, 502 for its 5xx, 504 for a timeout, 503 (with ``Retry-After``)
for a refusal.

``grpc()`` calls a gRPC method of a service instead (:mod:`.grpc_calls`): a JSON-like message in,
a :class:`ServiceResponse` out whose body is the answer as JSON, or for an error status the HTTP
status it stands for with a problem body, so the same handling serves both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.core.pipeline import RequestContext
from edgeway.gateway.telemetry.component import GatewayTelemetry
from edgeway.gateway.upstream.clusters import Cluster, Endpoint
from edgeway.gateway.upstream.forwarding import Forwarding
from edgeway.gateway.upstream.resilient import Refused
from edgeway.gateway.upstream.service_client import (
    CallLimits,
    ServiceReply,
    child_traceparent,
    common_headers,
    failure_code,
    start_call,
)
from edgeway.http import json_input
from edgeway.http.errors import UpstreamError
from edgeway.http.outgoing import UnsafeRequest, check_header, request_target
from edgeway.resilience.guard import ServiceGuard

if TYPE_CHECKING:
    from edgeway.gateway.actions.endpoints.grpc_calls import GrpcMethods, PrintOptions

QueryParams = Mapping[str, Any] | list[tuple[str, Any]]

__all__ = [
    "QueryParams",
    "ServiceCallError",
    "ServiceClient",
    "ServiceResponse",
    "ServiceStatusError",
    "Services",
    "UnsafeRequest",
]


class ServiceCallError(GatewayError):
    """A service call got no usable answer; ``status`` is what the endpoint answers for it
    (502 connection errors, 503 no instance or a refusal, 504 timeouts), ``code`` why in short
    (``connect_failed``, ``timeout``, ``circuit_open``, ``no_instance``, ``overloaded``...;
    ``status`` for an error status), ``retry_after`` when the service may take calls again."""

    def __init__(
        self,
        service: str,
        message: str,
        status: int,
        code: str = "status",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.body: Any = None


class ServiceStatusError(ServiceCallError):
    """A service answered an error status (from :meth:`ServiceResponse.raise_for_status`)."""

    def __init__(self, service: str, response: ServiceResponse) -> None:
        super().__init__(service, f"answered {response.status}", response.status)
        self.response = response
        try:
            self.body = response.json()
        except ValueError:
            self.body = None


class ServiceResponse:
    """A service's complete answer."""

    __slots__ = ("_reply", "service")

    def __init__(self, service: str, reply: ServiceReply) -> None:
        self.service = service
        self._reply = reply

    def __repr__(self) -> str:
        return f"<ServiceResponse {self.service} {self.status}>"

    @property
    def status(self) -> int:
        return self._reply.status

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content(self) -> bytes:
        return self._reply.body

    @property
    def text(self) -> str:
        return self._reply.body.decode("utf-8", "replace")

    @property
    def headers(self) -> dict[str, str]:
        """Response headers by lower-case name (the first value of a repeated one)."""
        out: dict[str, str] = {}
        for name, value in self._reply.headers:
            out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        return out

    def json(self) -> Any:
        """The body as JSON; ``None`` for an empty body; ValueError when it is not JSON (or
        nests deeper than the gateway reads: ``json_input.MAX_DEPTH``)."""
        if not self._reply.body:
            return None
        return json_input.loads(self._reply.body)

    def raise_for_status(self) -> ServiceResponse:
        if not self.ok:
            raise ServiceStatusError(self.service, self)
        return self


class ServiceClient:
    """Calls to one configured service."""

    __slots__ = ("_cluster", "_ctx", "_grpc", "_guard", "_headers", "_limits", "_loop", "_telemetry")

    def __init__(
        self,
        cluster: Cluster,
        guard: ServiceGuard[Endpoint] | None,
        ctx: RequestContext,
        headers: bytes,
        loop: asyncio.AbstractEventLoop,
        telemetry: GatewayTelemetry | None = None,
        grpc: GrpcMethods | None = None,
    ) -> None:
        self._cluster = cluster
        self._grpc = grpc
        self._guard = guard
        self._ctx = ctx
        self._headers = headers  # request id, forwarded client headers: the same for every call
        self._limits = CallLimits.of(cluster)
        self._loop = loop
        self._telemetry = telemetry

    @property
    def name(self) -> str:
        return self._cluster.name

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: QueryParams | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ServiceResponse:
        """Call ``path`` (which may hold its own query) with ``params`` added to the query;
        send ``json`` (encoded) or ``content`` (as is) as the body.

        What a request line cannot carry in ``path`` (a space, CR/LF, non-ASCII...) is
        percent-encoded, so a value pasted into it stays a value; a header name that is not a
        token or a value with a control character raises :class:`UnsafeRequest` (a ValueError),
        and nothing is sent."""
        target = request_target(path)
        if params:
            target += (b"&" if b"?" in target else b"?") + urlencode(params, doseq=True).encode()
        telemetry = self._telemetry
        meter = trace = None
        if telemetry is not None:
            meter = telemetry.meter(self.name)
            trace = telemetry.call_trace(self._ctx.span, self.name, f"{method.upper()} {self.name}")
        # Traced, each attempt carries its own traceparent (its span's).
        lines = [self._headers, child_traceparent(self._ctx) if trace is None else b""]
        body: bytes | None = None
        if json is not None:
            body = orjson.dumps(json)
            lines.append(b"content-type: application/json\r\n")
        elif content is not None:
            body = content
        for name, value in (headers or {}).items():
            check_header(name, value)
            lines.append(f"{name}: {value}\r\n".encode())
        limits = self._limits if timeout is None else CallLimits.of(self._cluster, timeout)
        try:
            pending = start_call(
                self._cluster,
                method.upper().encode(),
                target,
                b"".join(lines),
                body,
                limits,
                guard=self._guard,
                loop=self._loop,
                meter=meter,
                trace=trace,
            )
            reply = await pending.reply()
        except UpstreamError as exc:
            raise self._failed(exc) from exc
        return ServiceResponse(self.name, reply)

    async def grpc(
        self,
        method: str,
        message: Mapping[str, Any] | None = None,
        *,
        descriptor_set: str,
        print_options: PrintOptions | Mapping[str, bool] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> ServiceResponse:
        """Call the unary gRPC ``method`` (``package.Service/Method``, described in
        ``descriptor_set``: a path or ``package:pkg/file.pb``) with ``message`` (its request as
        proto3 JSON, by JSON or ``.proto`` field names) and answer its reply as JSON, printed by
        ``print_options`` (:class:`PrintOptions` or a dict of its keys).

        The metadata carries what an HTTP call's headers would (request id, trace context,
        forwarding and forwarded client headers, ``headers``); ``timeout`` replaces the
        service's ``timeouts.total``. A method the set does not hold (or a streaming one) raises
        :class:`~.grpc_calls.GrpcMethodError`; a message that does not fit the method's input
        raises :class:`UnsafeRequest`, and nothing is sent."""
        from edgeway.gateway.actions.endpoints.grpc_calls import GrpcMethodError

        if self._grpc is None:  # a Services made without the gateway's channels (tests, tools)
            raise GrpcMethodError(f"{self.name}: this gateway makes no gRPC calls from endpoints")
        meter = self._telemetry.meter(self.name) if self._telemetry is not None else None
        caller = self._grpc.caller(
            self._cluster, self._guard, method, descriptor_set, print_options, timeout, meter
        )
        # Imported here: only a call of a method (which loaded grpcio above) gets this far.
        from edgeway.gateway.actions.transcode.invoker import metadata_of_lines
        from edgeway.gateway.actions.transcode.messages import BadInput

        try:
            request = caller.request(orjson.dumps(message) if message else None)
        except BadInput as exc:
            raise UnsafeRequest(f"{self.name}: {method}: {exc}") from None
        lines = [self._headers, child_traceparent(self._ctx)]
        for name, value in (headers or {}).items():
            check_header(name, value)
            lines.append(f"{name}: {value}\r\n".encode())
        pending = caller.start(request, metadata_of_lines(b"".join(lines)), self._loop, None)
        try:
            reply = await pending.reply()
        except UpstreamError as exc:
            raise self._failed(exc) from exc
        finally:
            pending.close()
        return ServiceResponse(self.name, reply)

    def _failed(self, exc: UpstreamError) -> ServiceCallError:
        retry_after = exc.retry_after if isinstance(exc, Refused) else None
        return ServiceCallError(self.name, str(exc), exc.status, failure_code(exc), retry_after)

    async def get(self, path: str, **options: Any) -> ServiceResponse:
        return await self.request("GET", path, **options)

    async def post(self, path: str, **options: Any) -> ServiceResponse:
        return await self.request("POST", path, **options)

    async def put(self, path: str, **options: Any) -> ServiceResponse:
        return await self.request("PUT", path, **options)

    async def patch(self, path: str, **options: Any) -> ServiceResponse:
        return await self.request("PATCH", path, **options)

    async def delete(self, path: str, **options: Any) -> ServiceResponse:
        return await self.request("DELETE", path, **options)


class Services:
    """The configured services of the gateway, by name: ``services.catalog`` or
    ``services["catalog-v2"]``."""

    __slots__ = (
        "_clients",
        "_clusters",
        "_ctx",
        "_forward",
        "_forwarding",
        "_grpc",
        "_guards",
        "_loop",
        "_telemetry",
    )

    def __init__(
        self,
        ctx: RequestContext,
        clusters: Mapping[str, Cluster],
        guards: Mapping[str, ServiceGuard[Endpoint] | None],
        forward: bytes,
        loop: asyncio.AbstractEventLoop,
        forwarding: Forwarding,
        telemetry: GatewayTelemetry | None = None,
        grpc: GrpcMethods | None = None,
    ) -> None:
        self._ctx = ctx
        self._grpc = grpc
        self._forwarding = forwarding
        self._clusters = clusters
        self._guards = guards
        self._forward = forward
        self._loop = loop
        self._clients: dict[str, ServiceClient] = {}
        self._telemetry = telemetry

    def __getitem__(self, name: str) -> ServiceClient:
        client = self._clients.get(name)
        if client is None:
            cluster = self._clusters.get(name)
            if cluster is None:
                known = ", ".join(sorted(self._clusters)) or "none"
                raise KeyError(f"no service {name!r} in this gateway's config (services: {known})")
            headers = common_headers(self._ctx, self._forwarding) + self._forward
            client = self._clients[name] = ServiceClient(
                cluster, self._guards.get(name), self._ctx, headers, self._loop, self._telemetry, self._grpc
            )
        return client

    def __getattr__(self, name: str) -> ServiceClient:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __contains__(self, name: object) -> bool:
        return name in self._clusters
