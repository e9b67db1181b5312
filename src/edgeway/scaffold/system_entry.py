"""What a scaffolded service or edge adds to the system file (``edgeway.system.yaml``).

The system file names every process of a system once, so that ``edgeway demo`` and the deploy
renderers work from the same description. An entry here holds exactly the keys of that file's
model (:class:`edgeway.system.model.Service`, :class:`~edgeway.system.model.Edge`); what the model
gives by default (a kit service's health paths, one instance) is left to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from edgeway.scaffold.names import Names

__all__ = ["SystemEntry", "edge_entry", "service_entry"]


@dataclass(frozen=True)
class SystemEntry:
    kind: Literal["service", "edge"]
    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def section(self) -> str:
        """Where it goes in the system file: ``services`` or ``edges``."""
        return f"{self.kind}s"

    def as_mapping(self) -> dict[str, Any]:
        """``{section: {name: fields}}``: the entry under its section of the system file."""
        return {self.section: {self.name: dict(self.fields)}}


def service_entry(names: Names, port: int, image: str) -> SystemEntry:
    """A kit service in ``services/<name>/``: run as ``python -m <package>`` from its ``src/`` on
    one machine, from its own image on a cluster; its own database (SQLite on one machine)."""
    return SystemEntry(
        "service",
        names.name,
        {
            "module": names.package,
            "path": f"services/{names.name}",
            "image": image,
            "port": port,
            "database": names.name,
        },
    )


def edge_entry(names: Names, pattern: str, port: int, admin_port: int) -> SystemEntry:
    return SystemEntry(
        "edge",
        names.name,
        {
            "config": f"edges/{names.name}/gateway.yaml",
            "pattern": pattern,
            "port": port,
            "admin_port": admin_port,
        },
    )
