"""The edgeway service kit: what every service is written with.

``create_app`` gives a FastAPI app with health, metrics, JSON logs, tracing, identity, config,
flags, registry and typed clients wired in; ``Service`` adds the backing services (database,
event bus, outbox relay, a verifier with revocations) to it. The names below are the public
surface. ``Service``, ``Database`` and friends are imported on first use: they need SQLAlchemy
and the bus, which a service built with ``create_app`` alone does not.
"""

from typing import TYPE_CHECKING, Any

from edgeway.discovery.registry import Instance, Registry
from edgeway.service.app import Kit, ServiceKit, create_app, kit_of
from edgeway.service.clients import PeerResponse, RetryPolicy, ServiceClient
from edgeway.service.config_store import ConfigStore
from edgeway.service.flags import Flags
from edgeway.service.health import Health
from edgeway.service.idempotency import REPLAYED, IdempotencyKey, check_replay
from edgeway.service.identity import Caller, Identity, require_roles, require_scopes
from edgeway.service.models import (
    MAX_MONEY,
    Count,
    Cursor,
    Int32,
    Int64,
    Money,
    Patch,
    ResourceId,
    ResourceIdPath,
    SingleLine,
    is_single_line,
    location,
    money_total,
)
from edgeway.service.openapi import problem_responses
from edgeway.service.problems import Problem
from edgeway.service.settings import ServiceSettings

if TYPE_CHECKING:
    from edgeway.service.backing import Service, serve, service_of
    from edgeway.service.database import Database

_LAZY = {
    "Database": "edgeway.service.database",
    "Service": "edgeway.service.backing",
    "serve": "edgeway.service.backing",
    "service_of": "edgeway.service.backing",
}

__all__ = [
    "MAX_MONEY",
    "REPLAYED",
    "Caller",
    "ConfigStore",
    "Count",
    "Cursor",
    "Database",
    "Flags",
    "Health",
    "IdempotencyKey",
    "Identity",
    "Instance",
    "Int32",
    "Int64",
    "Kit",
    "Money",
    "Patch",
    "PeerResponse",
    "Problem",
    "Registry",
    "ResourceId",
    "ResourceIdPath",
    "RetryPolicy",
    "Service",
    "ServiceClient",
    "ServiceKit",
    "ServiceSettings",
    "SingleLine",
    "check_replay",
    "create_app",
    "is_single_line",
    "kit_of",
    "location",
    "money_total",
    "problem_responses",
    "require_roles",
    "require_scopes",
    "serve",
    "service_of",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
