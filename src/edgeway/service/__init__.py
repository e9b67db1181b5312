"""The edgeway service kit: what every service is written with.

``create_app`` gives a FastAPI app with health, metrics, JSON logs, tracing, identity, config,
flags, registry and typed clients wired in; the names below are the public surface.
"""

from edgeway.discovery.registry import Instance, Registry
from edgeway.service.app import Kit, ServiceKit, create_app, kit_of
from edgeway.service.clients import RetryPolicy, ServiceClient
from edgeway.service.config_store import ConfigStore
from edgeway.service.flags import Flags
from edgeway.service.health import Health
from edgeway.service.identity import Caller, Identity, require_roles, require_scopes
from edgeway.service.problems import Problem
from edgeway.service.settings import ServiceSettings

__all__ = [
    "Caller",
    "ConfigStore",
    "Flags",
    "Health",
    "Identity",
    "Instance",
    "Kit",
    "Problem",
    "Registry",
    "RetryPolicy",
    "ServiceClient",
    "ServiceKit",
    "ServiceSettings",
    "create_app",
    "kit_of",
    "require_roles",
    "require_scopes",
]
