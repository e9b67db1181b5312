"""The aggregate action: run the route's plan for each request, merge the call outputs, answer."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson

from edgeway.gateway.actions.aggregate.checks import META_KEY
from edgeway.gateway.actions.aggregate.executor import CallError, Run
from edgeway.gateway.actions.aggregate.merge import compile_merge
from edgeway.gateway.actions.aggregate.plan import CallPlan, Plan, Scope, compile_plan
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.pipeline import Action, GatewayEnv, RequestContext
from edgeway.gateway.telemetry.component import telemetry_of
from edgeway.gateway.upstream.resilient import service_guard
from edgeway.gateway.upstream.service_client import asks_client_certs, common_headers, upstream_problem
from edgeway.resilience.guard import retry_after_header

_JSON = (b"content-type", b"application/json")
_INCOMPLETE = (b"x-edgeway-completed", b"false")
_DEFAULT_BODY_LIMIT = 10 * 1024 * 1024


def build_aggregate(route: Route, env: GatewayEnv) -> Action:
    """The aggregate action of a route."""
    action = route.aggregate
    assert action is not None  # called for aggregate routes only
    guards = {name: service_guard(env, name) for name in {call.service for call in action.calls.values()}}
    channels = None
    if any(call.grpc is not None for call in action.calls.values()):
        from edgeway.gateway.actions.transcode.action import grpc_channels  # loads grpcio

        channels = grpc_channels(env)
    plan = compile_plan(
        action,
        env.clusters,
        env.config.auth,
        guards,
        client_certs=asks_client_certs(env.config),
        grpc_channels=channels,
    )
    for call in plan.calls:
        if call.grpc is not None:  # (HTTP calls take their meter per call, with their span)
            call.grpc = replace(call.grpc, meter=telemetry_of(env).meter(call.cluster.name))
    merge = compile_merge(plan)
    limit = env.config.limits.max_body_bytes
    body_limit = int(limit) if limit is not None else _DEFAULT_BODY_LIMIT
    # The gateway's loop, taken on the first request: asking for it costs a system call (getpid)
    # on Python 3.11, and every call of every request needs it.
    loops: list[asyncio.AbstractEventLoop] = []
    forwarding = env.forwarding
    telemetry = telemetry_of(env)

    async def aggregate(ctx: RequestContext) -> None:
        ex = ctx.ex
        body = await ex.body.read_all(body_limit) if plan.needs_client_body else None
        loop = loops[0] if loops else _first(loops)
        run = Run(plan, Scope(ctx, body), common_headers(ctx, forwarding), loop, telemetry)
        await run.execute()
        if run.fatal is not None:
            _fail_endpoint(*run.fatal)
        merged = merge(run.outputs)
        headers = [_JSON, (b"x-request-id", ex.request_id), (b"traceparent", ctx.traceparent)]
        if run.errors:
            merged[META_KEY] = {
                "completed": False,
                "errors": {name: error.meta() for name, error in run.errors.items()},
            }
            headers.append(_INCOMPLETE)
            ex.log["failed_calls"] = sorted(run.errors)
        ex.respond(200, headers, orjson.dumps(merged))

    return aggregate


def _first(loops: list[asyncio.AbstractEventLoop]) -> asyncio.AbstractEventLoop:
    loops.append(asyncio.get_running_loop())
    return loops[0]


def _fail_endpoint(call: CallPlan, error: CallError) -> None:
    body = error.body if error.kind == "upstream" else None
    members = {"call": call.name} if error.code is None else {"call": call.name, "code": error.code}
    problem = upstream_problem(
        error.endpoint_status, f"call '{call.name}' failed: {error.reason}", body, members
    )
    if error.retry_after is not None:
        problem.headers.append((b"retry-after", retry_after_header(error.retry_after)))
    raise problem


__all__ = ["Plan", "build_aggregate"]
