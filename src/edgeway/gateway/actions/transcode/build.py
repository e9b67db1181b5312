"""The ``transcode`` action's builder, importing grpcio and protobuf only when a route uses it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeway.gateway.config.schema import Route
    from edgeway.gateway.core.pipeline import Action, GatewayEnv


def build_transcode(route: Route, env: GatewayEnv) -> Action:
    from edgeway.gateway.actions.transcode.action import build_transcode as build

    return build(route, env)
