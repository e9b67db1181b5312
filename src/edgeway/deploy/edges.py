"""An edge's gateway config on a cluster: its own files, unchanged, and one rendered file on top
that includes them and finds the system's services the target's way (DNS) instead of the
registry a laptop uses.

The edge config is read with the gateway loader in the environment the target gives the edge, so
a config that would not start there stops the render with its file:line:col; the files it read
(the config and its includes) are the files shipped. A gateway service named like a service of
the system gets the target's discovery; any other keeps what its config says (a static address,
which the ``<PREFIX>_URL_<NAME>`` variables point at the right place).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgeway.gateway.config.loader import load_config
from edgeway.gateway.config.schema import GatewayConfig
from edgeway.gateway.core.errors import ConfigError, ConfigIssue
from edgeway.system import LoadedSystem

__all__ = ["EdgeFiles", "RenderError", "edge_files"]

# The service name and its port's name (`http`, or `grpc` for where it serves gRPC) → its
# discovery rule on the target.
DiscoveryRule = Callable[[str, str], dict[str, Any]]


class RenderError(ConfigError):
    """The system cannot be rendered for the target; every problem is located."""


@dataclass(frozen=True, slots=True)
class EdgeFiles:
    name: str
    files: dict[str, str]  # path relative to the edge config's folder → content as written
    entry: str  # the rendered file the edge is started with
    config: GatewayConfig  # what the edge runs on the target
    discovered: list[str]  # the system's services it finds by the target's discovery


def edge_files(
    loaded: LoadedSystem, name: str, target: str, env: Mapping[str, str], discovery: DiscoveryRule
) -> EdgeFiles:
    path = loaded.edge_config(name)
    sources: list[str] = []
    try:
        own = load_config(path, env, sources=sources)
    except ConfigError as exc:
        raise RenderError(exc.issues) from None
    reals = [Path(source) for source in sources]
    root = loaded.base_dir.resolve()
    for real in reals:
        if not real.is_relative_to(root):
            raise RenderError(
                [
                    ConfigIssue(
                        str(path),
                        None,
                        None,
                        "include",
                        f"{real} is outside {root}: keep an edge's config files under the system "
                        "file's folder, they are shipped with it",
                    )
                ]
            )
    # The files keep their places relative to each other (an edge of a scaffolded repository
    # includes ../routes/<service>.yaml): shipped from the folder that holds them all, which is
    # the edge's own folder when it includes nothing outside it.
    base = Path(os.path.commonpath([path.parent, *(real.parent for real in reals)]))
    files = {real.relative_to(base).as_posix(): real.read_text(encoding="utf-8") for real in reals}
    config_name = path.relative_to(base).as_posix()
    entry = f"edge-{target}.yaml"
    if entry in files:
        raise RenderError(
            [ConfigIssue(str(path), None, None, "", f"{entry} is the rendered file's name; rename yours")]
        )
    rules: dict[str, dict[str, Any]] = {}
    for service, upstream in own.services.items():
        if service in loaded.model.services:
            rules[service] = discovery(service, "http")
        elif (grpc := _grpc_of(loaded, path, service, upstream)) is not None:
            rules[service] = discovery(grpc, "grpc")
    discovered = list(rules)
    overlay: dict[str, Any] = {"include": [config_name]}
    if discovered:
        overlay["services"] = {
            service: {"instances": [], "discovery": _only(rule)} for service, rule in rules.items()
        }
    header = (
        f"# Rendered by `edgeway deploy render --target {target}` from {loaded.path.name}: the edge's\n"
        f"# own config ({config_name}), and the system's services found by the {target} way.\n"
    )
    files[entry] = header + yaml.safe_dump(overlay, sort_keys=False, default_flow_style=False)
    config = _load_rendered(files, entry, env, loaded.path.name)
    return EdgeFiles(name, files, entry, config, discovered)


def _grpc_of(loaded: LoadedSystem, path: Path, service: str, upstream: Any) -> str | None:
    """The system's service whose gRPC a gateway service reaches (its registry discovery reads the
    instances' ``grpc`` address), or None."""
    discovery = upstream.discovery
    kv = discovery.nats_kv if discovery is not None else None
    if kv is None or kv.meta != "grpc" or kv.service not in loaded.model.services:
        return None
    if loaded.model.services[kv.service].grpc_port is None:
        raise RenderError(
            [
                ConfigIssue(
                    str(path),
                    None,
                    None,
                    f"services.{service}",
                    f"reaches the gRPC of '{kv.service}', which has no grpc_port in {loaded.path.name}: "
                    "give it one, so the target can find where it serves gRPC",
                )
            ]
        )
    return str(kv.service)


def _only(rule: dict[str, Any]) -> dict[str, Any]:
    """A discovery rule that replaces whatever the edge's own config had (one source only)."""
    return {source: rule.get(source) for source in ("dns", "nats_kv", "consul")}


def _load_rendered(
    files: Mapping[str, str], entry: str, env: Mapping[str, str], system: str
) -> GatewayConfig:
    """Load the rendered entry as the edge will on the target: a broken overlay is our bug, but it
    must stop the render, not a rollout."""
    with tempfile.TemporaryDirectory(prefix="edgeway-render-") as tmp:
        for relative, text in files.items():
            target = Path(tmp, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        try:
            return load_config(os.path.join(tmp, entry), env)
        except ConfigError as exc:
            issues = [
                ConfigIssue(f"{system} (rendered {entry})", None, None, i.key_path, i.message)
                for i in exc.issues
            ]
            raise RenderError(issues) from None
