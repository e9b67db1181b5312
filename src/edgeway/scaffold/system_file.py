"""The repository's system file (``edgeway.system.yaml`` at its root), as ``edgeway new`` keeps it:
created with defaults by the first ``edgeway new``, then one entry added per service or edge.

The file is the user's: it is edited as text (:mod:`edgeway.scaffold.yaml_edit`), so its
comments and layout stay, and written whole or not at all — the new text goes to a temporary
file beside it, is read back with :func:`edgeway.system.load_system` (every check ``edgeway system
check`` makes of the file itself), and only then replaces the file.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgeway.gateway.core.errors import ConfigError
from edgeway.scaffold.errors import ScaffoldError
from edgeway.scaffold.system_entry import SystemEntry
from edgeway.scaffold.yaml_edit import YamlEditError, add_to_mapping, key_line
from edgeway.system import LoadedSystem, load_system, process_ports
from edgeway.system.loader import RESERVED_NAMES

__all__ = ["SYSTEM_FILE", "SystemFile", "default_text", "system_name_for"]

SYSTEM_FILE = "edgeway.system.yaml"
_NAME_MAX = 40


def system_name_for(folder: Path) -> str:
    """A system name from the repository folder's name: ``My Shop`` → ``my-shop``."""
    name = re.sub(r"[^a-z0-9]+", "-", folder.name.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"system-{name}".strip("-")
    return name[:_NAME_MAX].rstrip("-")


def default_text(name: str) -> str:
    """A new system file: one machine (embedded NATS, SQLite files), no entries yet."""
    prefix = name.upper().replace("-", "_")
    return f"""\
# The {name} system: every service and edge of this repository, described once.
#   edgeway demo --system edgeway.system.yaml             all of it on this machine
#   edgeway system check edgeway.system.yaml              what a cluster would refuse, said now
#   edgeway deploy render --target kubernetes --out k8s   manifests (or --target compose)
# `edgeway new service|gateway NAME` adds its entry below; edit them freely, comments are kept.
# The format: docs/deploy.md ("The system file").
system: {name}
# The configs edgeway new writes read {prefix}_HOST, {prefix}_PORT_<NAME> and {prefix}_URL_<NAME>,
# which every target sets: keep this prefix if you rename the system.
env_prefix: {prefix}
# `all`: every edge runs and, on a cluster, the services are reachable from outside too; `gateway`
# or `bff`: only the edges of that pattern are.
pattern: all

broker:
  nats:
    port: 14222            # the demo's embedded NATS (a system NATS often has 4222)

# The demo keeps each service's database in a SQLite file. On a cluster, to keep them in
# PostgreSQL, add it here and `postgres` to each service's extras (pyproject.toml):
# stores:
#   postgres: {{}}
#   redis: {{}}              # shared rate limits and cache when an edge runs several replicas

services: {{}}

edges: {{}}
"""


@dataclass
class SystemFile:
    """The system file of a repository: its text and what it says."""

    path: Path
    text: str
    loaded: LoadedSystem
    exists: bool

    @classmethod
    def open(cls, root: Path) -> SystemFile:
        """The repository's system file, or a new one named after the folder (not written yet)."""
        path = root / SYSTEM_FILE
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            try:
                loaded = load_system(path)
            except ConfigError as exc:
                raise ScaffoldError(
                    f"{path} has problems; fix them first (edgeway system check {path}):\n"
                    + "\n".join(f"  {issue}" for issue in exc.issues)
                ) from None
            return cls(path, text, loaded, True)
        if path.exists() or path.is_symlink():
            raise ScaffoldError(f"{path} is not a file")
        text = default_text(system_name_for(root))
        with tempfile.TemporaryDirectory(prefix="edgeway-new-") as tmp:
            draft = Path(tmp) / SYSTEM_FILE
            draft.write_text(text, encoding="utf-8")
            loaded = load_system(draft, env={})  # our own text: a failure here is a bug, shown as one
        return cls(path, text, loaded, False)

    @property
    def prefix(self) -> str:
        return self.loaded.model.prefix

    @property
    def name(self) -> str:
        return self.loaded.model.system

    def check_new(self, kind: str, name: str) -> None:
        """Refuse a name the system has (a service's or an edge's) or keeps for itself."""
        system = self.loaded.model
        for section, names in (("services", system.services), ("edges", system.edges)):
            if name in names:
                line = key_line(self.text, section, name)
                where = f"{self.path}:{line}" if line is not None else str(self.path)
                what = "a service" if section == "services" else "an edge"
                raise ScaffoldError(
                    f"{where}: the system has {what} named {name!r} already; choose another name "
                    f"for the new {kind} (or remove that entry first)"
                )
        if name in RESERVED_NAMES:
            raise ScaffoldError(
                f"{kind} name {name!r} is kept for the system's own processes "
                f"({', '.join(sorted(RESERVED_NAMES))}); choose another"
            )

    def free_port(self, start: int, *also_taken: int) -> int:
        """The first port from ``start`` that no process of the system has on one machine."""
        taken = {*process_ports(self.loaded.model).values(), *also_taken}
        port = start
        while port in taken:
            port += 1
        return port

    def with_entry(self, entry: SystemEntry) -> str:
        """The file's text with ``entry`` added at the end of its section."""
        block = [f"{entry.name}:", *(f"  {key}: {_inline(value)}" for key, value in entry.fields.items())]
        try:
            return add_to_mapping(self.text, entry.section, block)
        except YamlEditError as exc:
            raise ScaffoldError(
                f"{self.path}: cannot add {entry.section}.{entry.name}: {exc}; nothing was written"
            ) from None

    def write(self, text: str) -> None:
        """Replace the file with ``text`` once it reads back as a valid system file: written beside
        it first, checked, then renamed over it (atomically); on any problem the file is untouched."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{SYSTEM_FILE}.", suffix=".tmp")
        draft = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            draft.chmod(self.path.stat().st_mode & 0o777 if self.exists else 0o644)
            try:
                load_system(draft)
            except ConfigError as exc:
                issues = "\n".join(f"  {issue}".replace(str(draft), str(self.path)) for issue in exc.issues)
                raise ScaffoldError(
                    f"{self.path} would not be valid with the new entry; nothing was written:\n{issues}"
                ) from None
            os.replace(draft, self.path)
        finally:
            draft.unlink(missing_ok=True)
        self.text, self.exists = text, True


def _inline(value: object) -> str:
    """One value on one line, as YAML (a mapping or list in flow style, quoted when needed)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()
