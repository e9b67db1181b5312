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
from edgeway.gateway.config.schema import GatewayConfig, Route
from edgeway.gateway.core.errors import GatewayError, Rejection
from edgeway.gateway.core.pipeline import (
    ADMIT,
    Action,
    Filter,
    FilterBuilder,
    GatewayEnv,
    RequestContext,
    Verdict,
    assemble,
)
from edgeway.gateway.core.router import Router
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.body import empty_body
from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits
from edgeway.http.server import ServerProtocol
from edgeway.observability.ids import TraceParent


def _route() -> Route:
    return validate_config(config(1)).routes[0]


class _Named:
    """A filter that records its request step and, through a finisher, its end."""

    def __init__(self, name: str, calls: list[str], wait: bool) -> None:
        self.name = name
        self.calls = calls
        self.wait = wait

    def on_request(self, ctx: RequestContext) -> Verdict:
        self.calls.append(f"{self.name}>")
        ctx.defer(self._end)
        if self.wait:
            return self._later()
        return ADMIT

    async def _later(self) -> None:
        self.calls.append(f"{self.name} waited")

    def _end(self, failure: BaseException | None) -> None:
        self.calls.append(f"<{self.name}")


def _context(cfg: GatewayConfig) -> RequestContext:
    """A real context for a request nobody sends (the filters here never write to it)."""
    protocol = ServerProtocol(lambda ex: None, ServerLimits(), None)  # type: ignore[arg-type]
    ex = Exchange(protocol, b"GET", b"/api/x", b"/api/x", b"", b"1.1", [], b"a", empty_body(), "")
    match = Router.from_config(cfg).match("GET", "a", "/api/x")
    assert match is not None
    return RequestContext(ex, match, TraceParent(b"0" * 32, b"1" * 16, b"01"), b"")


async def test_filters_run_outermost_first_and_finish_innermost_first() -> None:
    calls: list[str] = []

    def named(name: str, wait: bool = False) -> FilterBuilder:
        return lambda route, env: _Named(name, calls, wait)

    def absent(route: Route, env: GatewayEnv) -> Filter | None:
        return None

    async def action(ctx: RequestContext) -> None:
        calls.append("action")

    cfg = validate_config(config(1))
    pipeline = assemble(_route(), GatewayEnv(cfg, {}), action, [named("a"), absent, named("b", wait=True)])
    assert len(pipeline.filters) == 2
    await pipeline.run(_context(cfg))
    assert calls == ["a>", "b>", "b waited", "action", "<b", "<a"]


async def test_a_rejection_is_a_problem_with_its_headers_and_nothing_goes_upstream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Deny:
        def on_request(self, ctx: RequestContext) -> Verdict:
            ctx.ex.add_response_header(b"x-filter", b"seen")
            raise Rejection(
                401, "Unauthorized", "no token", headers=[(b"www-authenticate", b"Bearer")], code="x"
            )

    def deny(route: Route, env: GatewayEnv) -> Filter:
        return Deny()

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
    def missing(route: Route, env: GatewayEnv) -> Action:
        raise GatewayError(f"route {route.id!r}: not here")

    monkeypatch.setitem(runtime.ACTIONS, "proxy", missing)
    with pytest.raises(GatewayError, match="not here"):
        Gateway(validate_config(config(1)), None)
