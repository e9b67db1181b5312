"""The edges' gateway configs, checked as part of their system: each loaded with the gateway
loader in the environment the demo gives it, so a system that checks clean starts clean."""

from __future__ import annotations

import os
from collections.abc import Mapping

from edgeway.gateway.config.loader import load_config
from edgeway.gateway.config.schema import GatewayConfig
from edgeway.gateway.core.errors import ConfigError, ConfigIssue
from edgeway.system.loader import LoadedSystem
from edgeway.system.wiring import edge_env, local_placement

__all__ = ["edge_config_issues", "load_edge_configs"]


def load_edge_configs(
    loaded: LoadedSystem, env: Mapping[str, str] | None = None
) -> tuple[dict[str, GatewayConfig], list[ConfigIssue]]:
    """Every edge's config as it loads on one machine, and the problems of those that do not."""
    system = loaded.model
    placement = local_placement(system, ".edgeway-demo")
    configs: dict[str, GatewayConfig] = {}
    issues: list[ConfigIssue] = []
    for name in system.edges:
        environment = {**(os.environ if env is None else env), **edge_env(system, placement, name)}
        try:
            configs[name] = load_config(loaded.edge_config(name), environment)
        except ConfigError as exc:
            issues.extend(exc.issues)
    return configs, issues


def edge_config_issues(loaded: LoadedSystem, env: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    return load_edge_configs(loaded, env)[1]
