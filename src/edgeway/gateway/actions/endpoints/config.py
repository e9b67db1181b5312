"""Config of Python endpoints: the ``endpoint`` action of a route and the modules that register
endpoints (``python`` at the top level), checked against each other at load."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any, Protocol

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from edgeway.gateway.config.base import HeaderName, StrictModel
from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.upstream.config import FORWARD_DEFAULT, forwardable

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


class EndpointAction(StrictModel):
    """Answer with a Python function registered by a module named in `python.modules`."""

    name: str = Field(
        min_length=1, description="The registered endpoint's name (the function name by default)."
    )
    forward_headers: list[HeaderName] | None = Field(
        None, description="Client headers copied onto the function's service calls; " + FORWARD_DEFAULT
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form settings the function reads as `req.options` (one function serving "
        "several profiles).",
    )

    _forward = field_validator("forward_headers")(forwardable)

    def service_refs(self) -> list[tuple[Loc, str]]:
        return []


class PythonEndpoints(StrictModel):
    """Modules that register Python endpoints."""

    modules: list[str] = Field(
        min_length=1, description="Modules to import (dotted names); their `@endpoint` functions register."
    )
    paths: list[str] = Field(
        default_factory=list,
        description="Directories put first on the import path before importing, relative to the "
        "directory the gateway starts in.",
    )

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if _MODULE.fullmatch(name) is None:
                raise PydanticCustomError(
                    "module", "'{name}' is not a dotted module name like myapp.bff", {"name": name}
                )
        return value


def check_python_endpoints(
    python: PythonEndpoints | None, routes: Sequence[EndpointRoute]
) -> list[tuple[Loc, str]]:
    """Import the configured modules and check every `endpoint` route against what they
    registered: the name exists, and a declared method and path are the route's.

    Run at config load, so ``edgeway config check`` reports a typo or a broken module with the
    file and line of the config key, not at the first request.
    """
    uses = [(index, route) for index, route in enumerate(routes) if route.endpoint is not None]
    if python is None:
        return [
            (
                ("routes", index, "endpoint"),
                "a Python endpoint needs `python: {modules: [...]}` naming the modules that register it",
            )
            for index, _ in uses
        ]
    # Imported here, not at the top: the registry is the action's runtime, which a config module
    # does not load by being imported.
    from edgeway.gateway.actions.endpoints.registry import load_modules

    found, problems = load_modules(python.modules, python.paths)
    if any(loc[:2] == ("python", "modules") for loc, _ in problems):
        return problems  # a module that did not import explains any name it would have registered
    modules = ", ".join(python.modules)
    for index, route in uses:
        assert route.endpoint is not None
        name = route.endpoint.name
        spec = found.get(name)
        if spec is None:
            close = difflib.get_close_matches(name, list(found), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            known = ", ".join(sorted(found)) or "none"
            problems.append(
                (
                    ("routes", index, "endpoint", "name"),
                    f"no endpoint '{name}' in {modules} ({hint}registered: {known})",
                )
            )
            continue
        match = route.match
        if spec.path is not None and spec.path != match.path:
            problems.append(
                (
                    ("routes", index, "match", "path"),
                    f"endpoint '{name}' ({spec.where}) is declared for path {spec.path!r}, "
                    f"not {match.path!r}",
                )
            )
        if spec.method is not None and (match.methods is None or spec.method not in match.methods):
            took = "any method" if match.methods is None else ", ".join(match.methods)
            problems.append(
                (
                    ("routes", index, "match", "methods"),
                    f"endpoint '{name}' ({spec.where}) is declared for {spec.method}; the route "
                    f"takes {took}: set methods: [{spec.method}]",
                )
            )
    return problems


class EndpointRoute(Protocol):
    """What :func:`check_python_endpoints` reads of a route."""

    @property
    def endpoint(self) -> EndpointAction | None: ...

    @property
    def match(self) -> MatchLike: ...


class MatchLike(Protocol):
    @property
    def path(self) -> str: ...

    @property
    def methods(self) -> list[str] | None: ...
