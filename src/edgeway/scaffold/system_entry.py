"""What a scaffolded service or edge adds to the system file (``edgeway.system.yaml``).

The system file names every process of a system once, so that ``edgeway demo`` and the deploy
renderers work from the same description. Scaffolding knows everything such an entry holds (the
command, the port, the health endpoints, the channels, the edge config and the services it
routes); :class:`SystemEntry` carries it, and ``edgeway new`` prints it as YAML today. Writing it
into the system file is one function over this entry, added together with the file's format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgeway.scaffold.names import Names

__all__ = ["SystemEntry", "edge_entry", "service_entry"]


@dataclass(frozen=True)
class SystemEntry:
    kind: str  # "service" or "edge"
    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    def as_mapping(self) -> dict[str, Any]:
        """``{kind + "s": {name: fields}}``: the entry under its section of the system file."""
        return {f"{self.kind}s": {self.name: dict(self.fields)}}


def service_entry(names: Names, port: int) -> SystemEntry:
    return SystemEntry(
        "service",
        names.name,
        {
            "command": ["python", "-m", names.package],
            "path": f"services/{names.name}",
            "port": port,
            "health": {"live": "/health/live", "ready": "/health/ready"},
            "database": {"kind": "sqlite"},
            "channels": [names.name],
            "routes": f"edges/routes/{names.name}.yaml",
        },
    )


def edge_entry(names: Names, pattern: str, services: list[str]) -> SystemEntry:
    return SystemEntry(
        "edge",
        names.name,
        {
            "pattern": pattern,
            "config": f"edges/{names.name}/gateway.yaml",
            "health": {"live": "/healthz", "ready": "/readyz"},
            "services": list(services),
        },
    )
