"""Gateway configuration: the schema, and the loader that reads YAML into it.

``load_config(path)`` returns a validated :class:`GatewayConfig` or raises :class:`ConfigError`
listing every problem with file, line, column and key path.
"""

from edgeway.gateway.config.loader import load_config, validate_config
from edgeway.gateway.config.schema import GatewayConfig, ProxyAction, Route, Service
from edgeway.gateway.core.errors import ConfigError, ConfigIssue

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
