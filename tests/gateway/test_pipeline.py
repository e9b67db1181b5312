"""The route pipeline: filters wrap the action in order, a Rejection becomes a problem response
with its headers, and headers added by a filter reach whatever response follows."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from gateway_helpers import backend, config, gateway, read_request

import edgeway.gateway.core.runtime as runtime
from conftest import raw_http
from edgeway.gateway.config import validate_config
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import GatewayError, Rejection
from edgeway.gateway.core.pipeline import GatewayEnv, Handler, RequestContext, assemble
from edgeway.gateway.core.runtime import Gateway


def _route() -> Route:
    return validate_config(config(1)).routes[0]


async def test_filters_wrap_the_action_outermost_first() -> None:
    calls: list[str] = []

    def named(name: str) -> Any:
        def build(route: Route, env: GatewayEnv, nxt: Handler) -> Handler:
            async def run(ctx: RequestContext) -> None:
                calls.append(f"{name}>")
                await nxt(ctx)
                calls.append(f"<{name}")

            return run

        return build

    def absent(route: Route, env: GatewayEnv, nxt: Handler) -> Handler | None:
        return None

    async def action(ctx: RequestContext) -> None:
        calls.append("action")

    cfg = validate_config(config(1))
    handler = assemble(_route(), GatewayEnv(cfg, {}), action, [named("a"), absent, named("b")])
    await handler(None)  # type: ignore[arg-type]  # the stubs never look at the context
    assert calls == ["a>", "b>", "action", "<b", "<a"]


async def test_a_rejection_is_a_problem_with_its_headers_and_nothing_goes_upstream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def deny(route: Route, env: GatewayEnv, nxt: Handler) -> Handler:
        async def run(ctx: RequestContext) -> None:
            ctx.ex.add_response_header(b"x-filter", b"seen")
            raise Rejection(
                401, "Unauthorized", "no token", headers=[(b"www-authenticate", b"Bearer")], code="x"
            )

        return run

    monkeypatch.setattr(runtime, "FILTERS", [deny])
    reached: list[bytes] = []

    async def upstream(r: Any, w: Any) -> None:
        line, _, _ = await read_request(r)
        reached.append(line)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await w.drain()

    async with backend(upstream) as port, gateway(config(port)) as (gw_port, _):
        raw = await raw_http(gw_port, b"GET /api/x HTTP/1.1\r\nhost: a\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    lower = head.lower()
    assert b"www-authenticate: bearer" in lower
    assert b"x-filter: seen" in lower  # added before the rejection, still on the response
    problem = orjson.loads(body)
    assert (problem["status"], problem["detail"], problem["code"]) == (401, "no token", "x")
    assert problem["request_id"]
    assert reached == []


def test_an_action_not_built_yet_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(route: Route, env: GatewayEnv) -> Handler:
        raise GatewayError(f"route {route.id!r}: not here")

    monkeypatch.setitem(runtime.ACTIONS, "proxy", missing)
    with pytest.raises(GatewayError, match="not here"):
        Gateway(validate_config(config(1)), None)
