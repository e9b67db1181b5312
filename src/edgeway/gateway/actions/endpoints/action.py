"""The endpoint action: call the registered Python function for each request and answer with
what it returns."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson

from edgeway.gateway.actions.endpoints.clients import (
    ServiceCallError,
    Services,
    ServiceStatusError,
    UnsafeRequest,
)
from edgeway.gateway.actions.endpoints.grpc_calls import GrpcMethods
from edgeway.gateway.actions.endpoints.registry import EndpointSpec, endpoint, registered
from edgeway.gateway.actions.endpoints.request import Request, Response
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import GatewayError, Rejection
from edgeway.gateway.core.pipeline import Action, GatewayEnv, RequestContext
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.gateway.upstream.resilient import service_guard
from edgeway.gateway.upstream.service_client import (
    asks_client_certs,
    forward_names,
    forwarded_headers,
    upstream_problem,
)
from edgeway.http.errors import HttpError
from edgeway.http.headers import HOP_BY_HOP
from edgeway.http.outgoing import check_header
from edgeway.resilience.guard import retry_after_header

if TYPE_CHECKING:
    from edgeway.gateway.actions.transcode.invoker import GrpcChannels

log = logging.getLogger("edgeway.gateway.actions.endpoints")

_DEFAULT_BODY_LIMIT = 10 * 1024 * 1024
_JSON = b"application/json"
# Headers the gateway frames itself; an endpoint's Response cannot set them.
_RESERVED = HOP_BY_HOP | {b"content-length", b"x-request-id", b"traceparent"}


def build_endpoint(route: Route, env: GatewayEnv) -> Action:
    """The endpoint action of a route: call the registered function."""
    action = route.endpoint
    assert action is not None  # called for endpoint routes only
    spec = registered(action.name)
    if spec is None:  # the config check imports the modules; reaching this is a bug or a reload race
        raise GatewayError(f"route {route.id!r}: no Python endpoint named {action.name!r} is registered")
    limit = env.config.limits.max_body_bytes
    body_limit = int(limit) if limit is not None else _DEFAULT_BODY_LIMIT
    forward = forward_names(
        action.forward_headers, env.config.auth, client_certs=asks_client_certs(env.config)
    )
    options = action.options
    clusters = env.clusters
    forwarding = env.forwarding
    # The function may call any service, so each one's resilience is made (and started) here.
    guards = {name: service_guard(env, name) for name in clusters}
    telemetry = telemetry_of(env)
    grpc = GrpcMethods(lambda: _grpc_channels(env))

    async def run(ctx: RequestContext) -> None:
        ex = ctx.ex
        services = Services(
            ctx,
            clusters,
            guards,
            forwarded_headers(ex.headers, forward),
            asyncio.get_running_loop(),
            forwarding,
            telemetry,
            grpc,
        )
        try:
            result = await spec.function(Request(ctx, services, options, body_limit))
            status, headers, body = _render(result)
        except (Rejection, HttpError):
            raise
        except ServiceCallError as exc:
            raise _call_problem(exc) from None
        except UnsafeRequest as exc:
            # A service request built from values that cannot go on the wire (a CR/LF in a
            # header): refused before sending. The values come from the request in practice.
            ex.log["error"] = f"UnsafeRequest: {exc}"
            raise Rejection(
                400,
                "Bad Request",
                f"endpoint '{spec.name}': a service request built from this request cannot be sent: {exc}",
                code="unsafe_request",
            ) from None
        except Exception as exc:  # the user's code: anything may go wrong; the client gets a 500
            _log_failure(ctx, spec, exc)
            raise Rejection(500, "Internal Server Error", f"endpoint '{spec.name}' failed") from None
        headers += [(b"x-request-id", ex.request_id), (b"traceparent", ctx.traceparent)]
        ex.respond(status, headers, body)

    return run


def _grpc_channels(env: GatewayEnv) -> GrpcChannels:
    """The gateway's gRPC channels, the ones its aggregates and transcoding routes use; opened
    by an endpoint's first gRPC call (a gateway whose endpoints make none never loads grpcio)."""
    from edgeway.gateway.actions.transcode.action import grpc_channels

    return grpc_channels(env)


def _call_problem(exc: ServiceCallError) -> Rejection:
    """What the client gets for a service call the endpoint did not handle: as a failed
    required aggregate call."""
    if isinstance(exc, ServiceStatusError):
        status = 502 if exc.status >= 500 else exc.status
        return upstream_problem(status, str(exc), exc.body, {"service": exc.service})
    problem = upstream_problem(exc.status, str(exc), None, {"service": exc.service, "code": exc.code})
    if exc.retry_after is not None:
        problem.headers.append((b"retry-after", retry_after_header(exc.retry_after)))
    return problem


def _render(result: Any) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    if result is None:
        return 204, [], b""
    if not isinstance(result, Response):
        return 200, [(b"content-type", _JSON)], _dumps(result)
    headers = _headers(result.headers)
    if result.content is not None:
        media = (result.media_type or "application/octet-stream").encode()
        return result.status, [(b"content-type", media), *headers], result.content
    if result.json is None and result.status in (204, 304):
        return result.status, headers, b""
    media = (result.media_type or "application/json").encode()
    return result.status, [(b"content-type", media), *headers], _dumps(result.json)


def _headers(given: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in given.items():
        lname = name.lower().encode("latin-1")
        if lname in _RESERVED or lname == b"content-type":
            continue
        try:
            check_header(name, value)
        except UnsafeRequest as exc:  # the endpoint's own response: its bug, a 500
            raise ValueError(f"response {exc}") from None
        out.append((name.encode("latin-1"), value.encode()))
    return out


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_encode_other)


def _encode_other(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _log_failure(ctx: RequestContext, spec: EndpointSpec, exc: Exception) -> None:
    ctx.ex.log["error"] = f"{type(exc).__name__}: {exc}"
    ctx.ex.log["endpoint"] = spec.where
    ctx.ex.log["traceback"] = "".join(traceback.format_exception(exc))
    log.error("endpoint %s failed (request %s)", spec.where, ctx.ex.request_id.decode(), exc_info=exc)


__all__ = ["Request", "Response", "build_endpoint", "endpoint"]
