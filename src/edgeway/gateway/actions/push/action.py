"""The push action: a route's channel, answered over WebSocket or Server-Sent Events, and the
gateway's push hub it subscribes to."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgeway.gateway.actions.push.config import PushSettings
from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import Action, GatewayEnv, RequestContext

if TYPE_CHECKING:
    from edgeway.gateway.actions.push.hub import PushHub


def push_hub(env: GatewayEnv) -> PushHub:
    """The gateway's push hub (created on first use, started with the gateway)."""
    from edgeway.gateway.actions.push.hub import PushHub

    return env.shared("push", lambda: PushHub(env.config.push or PushSettings(), env.metrics))


def build_push(route: Route, env: GatewayEnv) -> Action:
    # Imported here, not at the top: every gateway imports this module (the runtime's action
    # registry), and only gateways with a push route should load wsproto and the hub.
    from edgeway.gateway.actions.push.session import Channel
    from edgeway.gateway.actions.push.sse import serve_sse
    from edgeway.gateway.actions.push.websocket import serve_websocket
    from edgeway.gateway.filters.auth.tokens import EdgeAuth

    action = route.push
    assert action is not None  # called for push routes only
    assert route.id is not None  # ids are assigned at validation
    hub = push_hub(env)
    channel = Channel.build(route.id, action, hub)
    websocket = "websocket" in channel.transports
    sse = "sse" in channel.transports

    async def push(ctx: RequestContext) -> None:
        # The gateway's deny-list, made by the auth filter (if any route verifies tokens): a
        # session whose token it learns of is ended (looked up here, once the filters exist).
        auth = env.components.get("auth")
        if isinstance(auth, EdgeAuth):
            hub.follow(auth.revocations)
        upgrade = ctx.ex.upgrade
        if upgrade == b"websocket" and websocket:
            await serve_websocket(ctx, channel)
        elif upgrade is not None:
            raise Rejection(400, "Bad Request", f"cannot upgrade to {upgrade.decode('latin-1')!r} here")
        elif sse:
            await serve_sse(ctx, channel)
        else:
            raise Rejection(
                426,
                "Upgrade Required",
                "this push channel speaks WebSocket only",
                headers=[(b"upgrade", b"websocket"), (b"connection", b"Upgrade")],
            )

    return push
