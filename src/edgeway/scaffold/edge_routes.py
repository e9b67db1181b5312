"""A new service's route file, added to the ``include`` list of each edge of the system.

An edge made by ``edgeway new gateway`` includes the route file of every service there was; a
service made later is added the same way, so the edges keep serving every service. The config is
edited as text (its comments stay), then loaded with the gateway loader in the environment the demo
gives the edge — as ``edgeway system check`` loads it — before it replaces the old one. An edge
that cannot be changed safely (its include list written in a way the edit does not handle, or a
config that no longer loads once the routes are in, such as a route id both define) is left as it
was, and the caller says which line to add by hand.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeway.gateway.config.loader import load_config
from edgeway.gateway.core.errors import ConfigError
from edgeway.scaffold.yaml_edit import YamlEditError, add_to_sequence
from edgeway.system import LoadedSystem, edge_env, local_placement

__all__ = ["EdgeChange", "include_in_edge"]


@dataclass(frozen=True)
class EdgeChange:
    edge: str
    config: Path
    include: str  # the entry, relative to the edge's config
    changed: bool
    why: str | None = None  # why it was not changed


def include_in_edge(loaded: LoadedSystem, edge: str, route_file: Path) -> EdgeChange:
    """Add ``route_file`` to ``edge``'s include list, if that can be done safely."""
    config = loaded.edge_config(edge)
    include = Path(os.path.relpath(route_file, config.parent)).as_posix()
    system = loaded.model
    env = {**os.environ, **edge_env(system, local_placement(system, ".edgeway-demo"), edge)}

    def unchanged(why: str) -> EdgeChange:
        return EdgeChange(edge, config, include, False, why)

    sources: list[str] = []
    try:
        load_config(config, env, sources=sources)
    except ConfigError as exc:
        return unchanged(f"its config does not load as it is ({exc.issues[0]})")
    if os.path.realpath(route_file) in sources:
        return unchanged("it includes the file already")
    try:
        edited = add_to_sequence(config.read_text(encoding="utf-8"), "include", include)
    except YamlEditError as exc:
        return unchanged(str(exc))
    try:
        why = _replace_checked(config, edited, env)
    except OSError as exc:  # the service is made and in the system file: say it, do not undo it
        why = f"cannot write it: {exc}"
    return unchanged(why) if why else EdgeChange(edge, config, include, True)


def _replace_checked(config: Path, text: str, env: dict[str, str]) -> str | None:
    """Replace ``config`` with ``text`` if that loads; else why not (the file is left as it was)."""
    fd, name = tempfile.mkstemp(dir=config.parent, prefix=f".{config.name}.", suffix=".tmp")
    draft = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        draft.chmod(config.stat().st_mode & 0o777)
        try:
            load_config(draft, env)
        except ConfigError as exc:
            issue = str(exc.issues[0]).replace(str(draft), str(config))
            return f"with the routes included it would not load ({issue})"
        os.replace(draft, config)
        return None
    finally:
        draft.unlink(missing_ok=True)
