"""Render a template into a repository: all files or none, and never over an existing file; then
its entry in the repository's system file.

A repository scaffolded by edgeway has this layout (docs/scaffolding.md)::

    edgeway.system.yaml         the system: every service and edge, for edgeway demo and deploy
    services/<name>/            one service: pyproject.toml, Dockerfile, src/<package>/, tests/
    edges/<name>/               one gateway or BFF: gateway.yaml, tests/
    edges/routes/<name>.yaml    a service's routes and upstream, included by the edges that serve it

copier renders the template into a temporary directory; then every rendered file is checked
against the repository, and only when none exists is anything copied in. The system file is
written last, checked before it replaces the old one (:mod:`.system_file`); a failure while
copying or in that check removes what this run wrote.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeway.extras import require
from edgeway.scaffold.edge_routes import EdgeChange, include_in_edge
from edgeway.scaffold.errors import ScaffoldConflictError, ScaffoldError
from edgeway.scaffold.image import service_image_files
from edgeway.scaffold.names import check_name, is_valid_name
from edgeway.scaffold.system_entry import SystemEntry, edge_entry, service_entry
from edgeway.scaffold.system_file import SystemFile
from edgeway.system import env_key

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

# Where the ports of new processes start (the next one the system file does not use yet): a
# service's, an edge's and its admin API's. A service listens on its port in every target.
SERVICE_PORT = 8001
EDGE_PORT = 8080
ADMIN_PORT = 8180
# A generated project's version (its pyproject.toml), the tag of its image.
VERSION = "0.1.0"


@dataclass
class Generated:
    """What a run wrote: the files (relative to ``root``), the system file's new entry, the
    edges that now include the new service's routes (or why not), and what to do next."""

    root: Path
    files: list[Path]
    system_file: Path
    system_created: bool
    system_entry: SystemEntry
    edges: list[EdgeChange] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)


def render(
    template: str,
    data: Mapping[str, Any],
    root: Path,
    *,
    extra: Mapping[str, str] | None = None,
    then: Callable[[], None] | None = None,
) -> list[Path]:
    """Render ``templates/<template>`` with ``data`` (and the ``extra`` files: relative path →
    text) into ``root``; the files written, relative. ``then`` runs once they are in place; if it
    raises, they are removed again.

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
        for relative, text in (extra or {}).items():
            (out / relative).parent.mkdir(parents=True, exist_ok=True)
            (out / relative).write_text(text, encoding="utf-8")
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
            if then is not None:
                then()
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


def _routed_services(root: Path, system: SystemFile) -> list[str]:
    """The system's services that have a route file in ``edges/routes/`` (a new edge includes
    them all), in the system file's order."""
    routes = root / "edges" / "routes"
    return [
        name
        for name in system.loaded.model.services
        if is_valid_name(name) and (routes / f"{name}.yaml").is_file()
    ]


# The variables a generated config reads to learn where things are (edgeway.system.wiring): the
# demo, compose and Kubernetes set them; outside them the config's defaults apply.


def _url_var(system: SystemFile, name: str) -> str:
    """Where a service is reached: ``<PREFIX>_URL_<NAME>``."""
    return env_key(system.prefix, "URL", name)


def _edge_vars(system: SystemFile, name: str) -> dict[str, str]:
    """What an edge listens on: ``<PREFIX>_HOST``, ``<PREFIX>_PORT_<NAME>``, ``..._<NAME>_ADMIN``."""
    prefix = system.prefix
    return {
        "host_var": f"{prefix}_HOST",
        "port_var": env_key(prefix, "PORT", name),
        "admin_port_var": env_key(prefix, "PORT", f"{name}-admin"),
    }


def new_service(root: Path, name: str, *, include_in_edges: bool = True) -> Generated:
    """``services/<name>/`` (with its Dockerfile) and ``edges/routes/<name>.yaml`` in the
    repository at ``root``, its entry in the system file, and its routes in every edge's includes
    (unless ``include_in_edges`` is false)."""
    names = check_name("service", name)
    root = _repository(root)
    system = SystemFile.open(root)
    system.check_new("service", names.name)
    port = system.free_port(SERVICE_PORT)
    image = f"{system.name}/{names.name}:{VERSION}"
    data = {
        **names.as_data(),
        "prefix": system.prefix,
        "url_var": _url_var(system, names.name),
        "port": port,
        "image": image,
    }
    entry = service_entry(names, port, image)
    text = system.with_entry(entry)
    folder = f"services/{names.name}"
    extra = {f"{folder}/{n}": t for n, t in service_image_files(names.package, port, image).items()}
    created = not system.exists
    files = render("service", data, root, extra=extra, then=lambda: system.write(text))
    edges: list[EdgeChange] = []
    if include_in_edges:
        route_file = root / "edges" / "routes" / f"{names.name}.yaml"
        edges = [include_in_edge(system.loaded, edge, route_file) for edge in system.loaded.model.edges]
    steps = [
        f"cd {root / folder} && python -m pytest   # the service's own tests",
        f"docker build -t {image} {root / folder}   # its image, for compose and Kubernetes",
    ]
    steps += [
        f"add {change.include!r} to the include list of {change.config} ({change.why})"
        for change in edges
        if not change.changed and change.why != "it includes the file already"
    ]
    return Generated(root, files, system.path, created, entry, edges, steps)


def new_gateway(root: Path, name: str, pattern: str) -> Generated:
    """``edges/<name>/`` (config, test) for an edge of ``pattern`` ``gateway`` or ``bff``, and
    its entry in the system file."""
    names = check_name("gateway", name)
    if pattern not in PATTERNS:
        raise ScaffoldError(f"pattern {pattern!r} is not one of: {', '.join(PATTERNS)}")
    if names.name == "routes":
        raise ScaffoldError("edges/routes/ holds the services' route files: name the edge otherwise")
    root = _repository(root)
    system = SystemFile.open(root)
    system.check_new("gateway", names.name)
    port = system.free_port(EDGE_PORT)
    admin_port = system.free_port(ADMIN_PORT, port)
    services = [check_name("service", s) for s in _routed_services(root, system)]
    data = {
        **names.as_data(),
        **_edge_vars(system, names.name),
        "prefix": system.prefix,
        "pattern": pattern,
        "port": port,
        "admin_port": admin_port,
        "services": [s.as_data() for s in services],
    }
    entry = edge_entry(names, pattern, port, admin_port)
    text = system.with_entry(entry)
    created = not system.exists
    files = render("gateway", data, root, then=lambda: system.write(text))
    steps = [f"cd {root / 'edges' / names.name} && python -m pytest   # starts the edge and calls it"]
    return Generated(root, files, system.path, created, entry, [], steps)
