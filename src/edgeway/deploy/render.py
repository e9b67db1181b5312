"""Render a system for a target into a directory: everything is built and checked in memory
first, so a problem writes nothing; then the files are written (each atomically) and the
secrets the target needs are created if they do not exist yet."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edgeway.deploy.compose import render_compose
from edgeway.deploy.kubernetes import render_kubernetes
from edgeway.deploy.placement import ClusterOptions
from edgeway.deploy.secrets import ensure_env_file, ensure_secret_files
from edgeway.system import LoadedSystem
from edgeway.system.model import Pattern

__all__ = ["Rendered", "Target", "render"]

Target = Literal["kubernetes", "compose"]


@dataclass(frozen=True, slots=True)
class Rendered:
    files: list[Path]  # written, relative to the output directory
    secrets: Path  # where the secrets are kept


def render(
    loaded: LoadedSystem,
    target: Target,
    out: Path,
    *,
    pattern: Pattern | None = None,
    namespace: str | None = None,
    cluster_domain: str = "cluster.local",
) -> Rendered:
    if target == "kubernetes":
        options = ClusterOptions(namespace or loaded.model.system, cluster_domain)
        k8s = render_kubernetes(loaded, options, pattern=pattern)
        files, secrets = k8s.files, k8s.secrets
    else:
        compose = render_compose(loaded, pattern=pattern)
        files, secrets = compose.files, compose.secrets
    for relative, text in files.items():
        _write(out / relative, text)
    _remove_stale(out, files)
    if target == "kubernetes":
        where = out / "base" / "secrets"
        ensure_secret_files(where, secrets)
    else:
        where = out / ".env"
        ensure_env_file(where, secrets)
    return Rendered(sorted(Path(p) for p in files), where)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, text.encode("utf-8"))
        os.fchmod(fd, 0o644)
    finally:
        os.close(fd)
    os.replace(tmp, path)


MARK = "# Rendered by `edgeway deploy render"


def _remove_stale(out: Path, files: dict[str, str]) -> None:
    """Files an earlier render wrote that this one did not (a service or edge since removed from
    the system file): left behind, they would read as part of the system."""
    for path in [*out.glob("base/*.yaml"), *out.glob("edges/*/**/*")]:
        relative = path.relative_to(out).as_posix()
        if relative in files or not path.is_file():
            continue
        if relative.startswith("edges/") or path.read_text(encoding="utf-8").startswith(MARK):
            path.unlink()
    # an edge's folders that held only such files (an include that moved)
    for folder in sorted(out.glob("edges/*/**/"), key=lambda p: len(p.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
