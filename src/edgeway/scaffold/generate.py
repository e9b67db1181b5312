"""Render a template into a repository: all files or none, and never over an existing file.

A repository scaffolded by edgeway has this layout (docs/scaffolding.md)::

    services/<name>/            one service: pyproject.toml, src/<package>/, tests/
    edges/<name>/               one gateway or BFF: gateway.yaml, tests/
    edges/routes/<name>.yaml    a service's routes and upstream, included by the edges that serve it

copier renders the template into a temporary directory; then every rendered file is checked
against the repository, and only when none exists is anything copied in. A failure while
copying removes what this run wrote.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeway.extras import require
from edgeway.scaffold.names import check_name, is_valid_name
from edgeway.scaffold.system_entry import SystemEntry, edge_entry, service_entry

__all__ = [
    "PATTERNS",
    "TEMPLATES",
    "Generated",
    "ScaffoldConflictError",
    "ScaffoldError",
    "new_gateway",
    "new_service",
    "render",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
PATTERNS = ("gateway", "bff")

# The port a generated service listens on unless EDGEWAY_PORT says otherwise, and where its edge
# entry points by default: the kit's default (ServiceSettings.port).
SERVICE_PORT = 8000


class ScaffoldError(Exception):
    """Scaffolding cannot go ahead; the message says why and what to do instead."""


class ScaffoldConflictError(ScaffoldError):
    """Files the template would write exist already; nothing was written."""

    def __init__(self, root: Path, existing: list[Path]) -> None:
        shown = ", ".join(str(p) for p in existing[:5]) + (" ..." if len(existing) > 5 else "")
        super().__init__(
            f"{len(existing)} file(s) would be overwritten in {root}: {shown}; "
            "nothing was written (remove them or choose another name)"
        )
        self.existing = existing


@dataclass
class Generated:
    """What a run wrote: the files (relative to ``root``) and what to do next."""

    root: Path
    files: list[Path]
    system_entry: SystemEntry
    next_steps: list[str] = field(default_factory=list)


def render(template: str, data: Mapping[str, Any], root: Path) -> list[Path]:
    """Render ``templates/<template>`` with ``data`` into ``root``; the files written, relative.

    Raises :class:`ScaffoldConflictError` (nothing written) when any of them exists.
    """
    require("scaffold", "`edgeway new`")
    import copier  # the scaffold extra; imported once the extra is known to be there

    source = TEMPLATES / template
    with tempfile.TemporaryDirectory(prefix=f"edgeway-new-{template}-") as staging:
        out = Path(staging)
        # No user settings (defaults, trusted templates) from ~/.config: the result is the
        # template's alone. unsafe=False: the templates run no tasks and load no extensions.
        copier.run_copy(
            str(source),
            out,
            data=dict(data),
            defaults=True,
            quiet=True,
            unsafe=False,
            settings=copier.Settings(),
        )
        rendered = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
        existing = [p for p in rendered if (root / p).exists() or (root / p).is_symlink()]
        if existing:
            raise ScaffoldConflictError(root, existing)
        written: list[Path] = []
        made_dirs: list[Path] = []
        try:
            for rel in rendered:
                target = root / rel
                for parent in reversed(target.parents):
                    if not parent.exists():
                        parent.mkdir()
                        made_dirs.append(parent)
                shutil.copy2(out / rel, target)
                written.append(target)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            for directory in reversed(made_dirs):
                shutil.rmtree(directory, ignore_errors=True)
            raise
    return rendered


def _repository(root: Path) -> Path:
    root = root.expanduser()
    if root.exists() and not root.is_dir():
        raise ScaffoldError(f"{root} is not a directory")
    return root.resolve()


def _service_names_in(root: Path) -> list[str]:
    """The services that have a routes file in ``edges/routes/`` (an edge includes them all)."""
    routes = root / "edges" / "routes"
    found = sorted(p.stem for p in routes.glob("*.yaml")) if routes.is_dir() else []
    return [name for name in found if is_valid_name(name)]


def new_service(root: Path, name: str) -> Generated:
    """``services/<name>/`` and ``edges/routes/<name>.yaml`` in the repository at ``root``."""
    names = check_name("service", name)
    root = _repository(root)
    data = {**names.as_data(), "port": SERVICE_PORT}
    files = render("service", data, root)
    edges = sorted(p.parent.name for p in (root / "edges").glob("*/gateway.yaml"))
    include = f"../routes/{names.name}.yaml"
    steps = [
        f"cd {root / 'services' / names.name} && python -m pytest   # the service's own tests",
        f"EDGEWAY_PORT={SERVICE_PORT} python -m {names.package}   "
        f"# run it (from services/{names.name}/src, or once installed)",
    ]
    steps += [f"add {include!r} to the include list of edges/{edge}/gateway.yaml" for edge in edges]
    return Generated(root, files, service_entry(names, SERVICE_PORT), steps)


def new_gateway(root: Path, name: str, pattern: str) -> Generated:
    """``edges/<name>/`` (config, test) for an edge of ``pattern`` ``gateway`` or ``bff``."""
    names = check_name("gateway", name)
    if pattern not in PATTERNS:
        raise ScaffoldError(f"pattern {pattern!r} is not one of: {', '.join(PATTERNS)}")
    if names.name == "routes":
        raise ScaffoldError("edges/routes/ holds the services' route files: name the edge otherwise")
    root = _repository(root)
    services = [check_name("service", s) for s in _service_names_in(root)]
    data = {
        **names.as_data(),
        "pattern": pattern,
        "services": [s.as_data() for s in services],
    }
    files = render("gateway", data, root)
    steps = [
        f"cd {root / 'edges' / names.name} && python -m pytest   # starts the edge and calls it",
        f"edgeway gateway --config {root / 'edges' / names.name / 'gateway.yaml'}",
    ]
    return Generated(root, files, edge_entry(names, pattern, [s.name for s in services]), steps)
