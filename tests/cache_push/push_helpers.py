"""Push routes for the WebSocket and SSE tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cache_push_helpers import RunningGateway

from edgeway.gateway.actions.push import LocalSource, PushMessage
from edgeway.gateway.actions.push.hub import PushHub
from edgeway.gateway.core.pipeline import Identity

TOPICS = [
    {"pattern": "news", "allow": "anyone"},
    {"pattern": "users/{user}/notifications", "allow": "owner", "owner_param": "user"},
    {"pattern": "jobs/{id}", "allow": "owner", "owner_field": "owner"},
    {"pattern": "admin/{x}", "allow": "roles", "roles": ["admin"]},
    {"pattern": "tenants/{t}", "allow": "owner", "owner_param": "t", "owner_claim": "tenant"},
    {"pattern": "members/{x}", "allow": "authenticated"},
]


def push_cfg(push: dict[str, Any] | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "push-gw",
        "routes": [{"id": "push", "match": {"path": "/push"}, "push": {"topics": TOPICS, **(push or {})}}],
    }
    if settings is not None:
        cfg["push"] = settings
    return cfg


def hub(g: RunningGateway) -> PushHub:
    found = g.gw.env.components["push"]
    assert isinstance(found, PushHub)
    return found


LOCAL = LocalSource()  # named in configs as "push_helpers:LOCAL"


class EvenJobs:
    """A custom authoriser: only even job numbers, and only messages marked public."""

    def may_subscribe(self, identity: Identity | None, topic: str, params: Mapping[str, str]) -> bool:
        return int(params["n"]) % 2 == 0

    def may_receive(self, identity: Identity | None, message: PushMessage) -> bool:
        return message.field(("public",)) is True
