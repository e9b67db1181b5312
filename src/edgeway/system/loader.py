"""Reading a system file: the gateway config loader (YAML with file:line:col errors, ``${ENV}``,
``include:``) with the :class:`~edgeway.system.model.System` model, plus the checks that span
several entries: names, ports, start order, the edges' config files.

``load_system(path)`` returns a :class:`LoadedSystem` (the model and where it was read from, so
relative paths resolve) or raises :class:`~edgeway.gateway.core.errors.ConfigError` listing every
problem, each naming the file, line, column and key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.config.loader import load_model
from edgeway.system.model import System

__all__ = ["RESERVED_NAMES", "LoadedSystem", "instance_names", "load_system", "process_ports"]

# Names the renderers and `after` use for what is not a service.
RESERVED_NAMES = frozenset({"broker", "nats", "postgres", "redis", "bus-setup"})


@dataclass(frozen=True, slots=True)
class LoadedSystem:
    """A validated system file and the file it came from."""

    model: System
    path: Path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def edge_config(self, name: str) -> Path:
        """The edge's gateway config file (its path in the system file is relative to the file)."""
        return (self.base_dir / self.model.edges[name].config).resolve()

    def service_path(self, name: str) -> Path | None:
        """The service's project folder, when the file names one (``path``)."""
        path = self.model.services[name].path
        return None if path is None else (self.base_dir / path).resolve()


def load_system(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedSystem:
    """Read and check a system file; raise ConfigError naming every problem's place."""
    file = Path(path)
    model = load_model(file, System, env, check=lambda system: _problems(system, file.parent))
    return LoadedSystem(model, file.resolve())


def instance_names(system: System, name: str) -> list[str]:
    """The processes of a service on one machine: its name, or ``name-1`` … ``name-N``."""
    count = system.services[name].instances
    return [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]


def grpc_port_name(instance: str) -> str:
    """The name of an instance's gRPC port (``edgeway demo --port inventory-grpc=PORT``)."""
    return f"{instance}-grpc"


def process_ports(system: System) -> dict[str, int]:
    """Every named port of the system on one machine, in file order: the embedded broker, each
    service instance (``catalog-1``: port, ``catalog-2``: port + 1), each edge and its admin API
    (``gateway-admin``), and the gRPC port of an instance that serves gRPC (``inventory-grpc``)."""
    ports: dict[str, int] = {}
    if system.broker.nats.external_url is None:
        ports["nats"] = system.broker.nats.port
    for name, service in system.services.items():
        for index, instance in enumerate(instance_names(system, name)):
            ports[instance] = service.port + index
            if service.grpc_port is not None:
                ports[grpc_port_name(instance)] = service.grpc_port + index
    for name, edge in system.edges.items():
        ports[name] = edge.port
        ports[f"{name}-admin"] = edge.admin_port
    return ports


def _problems(system: System, base_dir: Path) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    problems += _names(system)
    problems += _ports(system)
    problems += _start_order(system)
    security = system.security_services()
    if len(security) > 1:
        problems.append(
            (("services", security[1], "kind"), f"a second security service (the first is '{security[0]}')")
        )
    for name, service in system.services.items():
        if service.path is not None and not (base_dir / service.path).is_dir():
            problems.append((("services", name, "path"), f"no such folder: {base_dir / service.path}"))
    for name, edge in system.edges.items():
        config = base_dir / edge.config
        if not config.is_file():
            problems.append((("edges", name, "config"), f"no such file: {config}"))
    if system.pattern in ("gateway", "bff") and not system.edges_of(system.pattern):
        problems.append(
            (("pattern",), f"pattern '{system.pattern}' but no edge has `pattern: {system.pattern}`")
        )
    return problems


def _names(system: System) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    owners: dict[str, Loc] = {}
    for section, names in (("services", list(system.services)), ("edges", list(system.edges))):
        for name in names:
            loc: Loc = (section, name)
            if name in RESERVED_NAMES:
                problems.append((loc, f"'{name}' is reserved (the broker and the stores use it)"))
            taken = [name]
            if section == "services":
                taken += [n for n in instance_names(system, name) if n != name]
            else:
                taken.append(f"{name}-admin")
            for taken_name in taken:
                if taken_name in owners:
                    other = ".".join(str(part) for part in owners[taken_name])
                    problems.append((loc, f"the name '{taken_name}' is already {other}'s"))
                else:
                    owners[taken_name] = loc
    return problems


def _ports(system: System) -> list[tuple[Loc, str]]:
    """On one machine every process listens on a port of its own."""
    problems: list[tuple[Loc, str]] = []
    seen: dict[int, str] = {}
    places: dict[str, Loc] = {"nats": ("broker", "nats", "port")}
    for name in system.services:
        for instance in instance_names(system, name):
            places[instance] = ("services", name, "port")
            places[grpc_port_name(instance)] = ("services", name, "grpc_port")
    for name in system.edges:
        places[name] = ("edges", name, "port")
        places[f"{name}-admin"] = ("edges", name, "admin_port")
    for name, port in process_ports(system).items():
        if port in seen:
            problems.append((places[name], f"port {port} of {name} is already {seen[port]}'s"))
        else:
            seen[port] = name
    return problems


def _start_order(system: System) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for name, service in system.services.items():
        for index, dep in enumerate(service.after or ()):
            if dep != "broker" and dep not in system.services:
                problems.append(
                    (
                        ("services", name, "after", index),
                        f"'{dep}' is not a service of this system (nor `broker`)",
                    )
                )
            elif dep == name:
                problems.append((("services", name, "after", index), "a service cannot wait for itself"))
    cycle = _cycle(system)
    if cycle:
        problems.append((("services", cycle[0], "after"), "start order cycle: " + " -> ".join(cycle)))
    return problems


def _cycle(system: System) -> list[str]:
    graph = {
        name: [d for d in (service.after or ()) if d in system.services and d != name]
        for name, service in system.services.items()
    }
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str]:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                return [*trail[trail.index(dep) :], dep] if dep in trail else [node, dep]
            if state.get(dep) is None:
                found = visit(dep, [*trail, dep])
                if found:
                    return found
        state[node] = 2
        return []

    for name in graph:
        if state.get(name) is None:
            found = visit(name, [name])
            if found:
                return found
    return []
