"""Gateway configuration: the base every config model builds on, the assembly of a route and of
the whole file (:mod:`.schema`), and the loader that reads YAML into it.

``load_config(path)`` returns a validated :class:`GatewayConfig` or raises :class:`ConfigError`
listing every problem with file, line, column and key path.

The names below are resolved on first use, not when this package is imported: the config model of
each filter and action imports :mod:`.base` (and so runs this file), and the assembly imports
those models, so importing the assembly here would be an import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgeway.gateway.core.errors import ConfigError, ConfigIssue

if TYPE_CHECKING:
    from edgeway.gateway.actions.proxy_config import ProxyAction
    from edgeway.gateway.config.loader import load_config, validate_config
    from edgeway.gateway.config.schema import GatewayConfig, Route
    from edgeway.gateway.upstream.config import Service

_LAZY = {
    "GatewayConfig": "edgeway.gateway.config.schema",
    "ProxyAction": "edgeway.gateway.actions.proxy_config",
    "Route": "edgeway.gateway.config.schema",
    "Service": "edgeway.gateway.upstream.config",
    "load_config": "edgeway.gateway.config.loader",
    "validate_config": "edgeway.gateway.config.loader",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "ConfigError",
    "ConfigIssue",
    "GatewayConfig",
    "ProxyAction",
    "Route",
    "Service",
    "load_config",
    "validate_config",
]
