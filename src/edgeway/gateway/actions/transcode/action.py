"""The ``transcode`` route action: the request's method and path pick a gRPC method (by its
``google.api.http`` bindings, or the one the route names), the JSON becomes its request message,
the call is made, and its response message is answered as JSON. A streaming method's requests
and answer are :mod:`.relay`'s.

Errors answer problems: no binding for the path 404 (or 405 with ``Allow`` when only the HTTP
method differs), a body that is not JSON or a value that does not fit its field 400 naming the
field (the call is not made), an error status the HTTP status it stands for
(:mod:`.status`), no instance 503.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from urllib.parse import parse_qsl, unquote

import orjson
from google.protobuf.message import Message

from edgeway.gateway.actions.transcode.config import TranscodeAction
from edgeway.gateway.actions.transcode.descriptors import MethodInfo
from edgeway.gateway.actions.transcode.framing import framing_of
from edgeway.gateway.actions.transcode.http_rule import Binding
from edgeway.gateway.actions.transcode.invoker import GrpcChannels, GrpcFailure, call_unary, metadata_of
from edgeway.gateway.actions.transcode.messages import BadInput, JsonOptions, build_request, render_response
from edgeway.gateway.actions.transcode.relay import StreamRelay, stream_requests
from edgeway.gateway.actions.transcode.status import failure_problem
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import Action, GatewayEnv, RequestContext
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.gateway.upstream.resilient import Refused, service_guard
from edgeway.gateway.upstream.service_client import asks_client_certs, child_traceparent, forward_names
from edgeway.http import json_input
from edgeway.http.json_input import TooDeep

__all__ = ["build_transcode", "grpc_channels", "request_metadata"]

_JSON = (b"content-type", b"application/json")
_DEFAULT_BODY_LIMIT = 10 * 1024 * 1024


def grpc_channels(env: GatewayEnv) -> GrpcChannels:
    """The gateway's gRPC channels (one component for every route and aggregate call)."""
    return env.shared("grpc-channels", lambda: GrpcChannels(env.config.services, env.clusters))


def request_metadata(ctx: RequestContext, forward: frozenset[bytes]) -> list[tuple[str, str]]:
    """The request id, a traceparent for the call's span, and the forwarded client headers."""
    ex = ctx.ex
    trace = child_traceparent(ctx)[len(b"traceparent: ") : -2]
    pairs = [(b"x-request-id", ex.request_id), (b"traceparent", trace)]
    pairs += [(name, value) for name, value in ex.headers if name.lower() in forward]
    return metadata_of(pairs)


def parse_body(raw: bytes) -> object:
    """The request's JSON (None when there is no body); 400 when it is not JSON."""
    if not raw.strip():
        return None
    try:
        return json_input.loads(raw)
    except TooDeep as exc:
        raise Rejection(400, "Bad Request", f"the request body is {exc}") from None
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "Bad Request", f"the request body is not valid JSON: {exc}") from None


def build_request_or_400(
    info: MethodInfo,
    *,
    path_vars: Mapping[tuple[str, ...], str],
    query: Sequence[tuple[str, str]],
    body: object,
    body_field: str | None,
    options: JsonOptions,
) -> Message:
    try:
        return build_request(
            info.input_type,
            path_vars=path_vars,
            query=query,
            body=body,
            body_field=body_field,
            options=options,
        )
    except BadInput as exc:
        members = {"field": exc.field} if exc.field else {}
        raise Rejection(400, "Bad Request", str(exc), members=members) from None


class _Selector:
    """Which binding a request reaches."""

    def __init__(self, action: TranscodeAction) -> None:
        # Most literal segments first: /v1/shelves/latest before /v1/shelves/{id}.
        self.bindings = sorted(action.bindings, key=lambda entry: -entry[1].template.literal_segments)
        self.direct = action.direct

    def select(self, ctx: RequestContext) -> tuple[MethodInfo, Binding | None, dict[tuple[str, ...], str]]:
        ex = ctx.ex
        if self.direct is not None:
            params = {tuple(name.split(".")): unquote(value) for name, value in ctx.match.params.items()}
            return self.direct, None, params
        path = ex.path.decode("latin-1")
        method = ex.method.decode("latin-1")
        allowed: list[str] = []
        for info, binding in self.bindings:
            found = binding.template.match(path)
            if found is None:
                continue
            if binding.method == method:
                return info, binding, found
            allowed.append(binding.method)
        if allowed:
            allow = ", ".join(sorted(set(allowed)))
            raise Rejection(
                405,
                "Method Not Allowed",
                f"{path} takes {allow}",
                headers=[(b"allow", allow.encode())],
            )
        raise Rejection(404, "Not Found", f"no gRPC method is bound to {method} {path}")


def build_transcode(route: Route, env: GatewayEnv) -> Action:
    """The transcoding action of a route."""
    action = route.transcode
    assert action is not None  # called for transcode routes only
    service = action.service
    cluster = env.clusters[service]
    guard = service_guard(env, service)
    channels = grpc_channels(env)
    svc = env.config.services[service]
    timeout = float(action.timeout) if action.timeout is not None else float(svc.timeouts.total)
    forward = forward_names(
        action.forward_headers, env.config.auth, client_certs=asks_client_certs(env.config)
    )
    options = action.json_options()
    meter = telemetry_of(env).meter(service)
    selector = _Selector(action)
    limit = env.config.limits.max_body_bytes
    body_limit = int(limit) if limit is not None else _DEFAULT_BODY_LIMIT

    relay = StreamRelay(
        channels, cluster, guard, timeout, meter, options, framing_of(action.print_options.stream_format)
    )
    max_messages = action.max_stream_messages

    async def transcode(ctx: RequestContext) -> None:
        ex = ctx.ex
        info, binding, path_vars = selector.select(ctx)
        body = parse_body(await ex.body.read_all(body_limit))
        query = parse_qsl(ex.query.decode("utf-8", "replace"), keep_blank_values=True)
        body_field = binding.body if binding is not None else "*"
        if info.client_streaming or info.server_streaming:
            if info.client_streaming:
                assert body_field is not None  # a client-streaming rule without a body fails the check
                requests = stream_requests(
                    info,
                    path_vars=path_vars,
                    query=query,
                    body=body,
                    body_field=body_field,
                    options=options,
                    limit=max_messages,
                )
            else:
                requests = [
                    build_request_or_400(
                        info,
                        path_vars=path_vars,
                        query=query,
                        body=body,
                        body_field=body_field,
                        options=options,
                    )
                ]
            ex.log["grpc_method"] = info.full_name
            await relay.answer(ctx, info, binding, requests, request_metadata(ctx, forward))
            return
        request = build_request_or_400(
            info,
            path_vars=path_vars,
            query=query,
            body=body,
            body_field=body_field,
            options=options,
        )
        ex.log["grpc_method"] = info.full_name
        try:
            reply = await call_unary(
                channels,
                cluster,
                guard,
                info,
                request,
                timeout=timeout,
                metadata=request_metadata(ctx, forward),
                meter=meter,
            )
        except GrpcFailure as failure:
            ex.log["grpc_status"] = failure.code.name
            raise failure_problem(failure, service) from None
        except Refused as exc:  # no instance, an open breaker, a full concurrency bound
            raise exc.rejection() from None
        value = render_response(reply, binding.response_body if binding is not None else None, options)
        headers = [_JSON, (b"x-request-id", ex.request_id), (b"traceparent", ctx.traceparent)]
        ex.respond(200, headers, orjson.dumps(value))

    return transcode
