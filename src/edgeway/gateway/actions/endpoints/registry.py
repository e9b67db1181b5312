"""The ``@endpoint`` decorator and the registry it fills, and loading the modules a config names.

A module registers its endpoints when imported::

    from edgeway.bff import endpoint

    @endpoint("GET", "/home")
    async def home(req): ...

The name is the function's (or ``name=``). Method and path, when given, are the endpoint's
contract with the route that serves it: the config check refuses a route whose path or methods
differ, so the parameters the function reads are the ones the route captures. Routes refer to
an endpoint by name (``endpoint: {name: home}``), so every exposed path and the policies on it
(auth, limits, CORS, cache) stay in the config, where they are reviewed.

Names are global to the process; registering a second function under a taken name is an error
at import, naming both.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from edgeway.gateway.config.keypath import Loc
from edgeway.gateway.core.errors import GatewayError

EndpointFunction = Callable[[Any], Awaitable[Any]]
F = TypeVar("F", bound=EndpointFunction)


class EndpointRegistrationError(GatewayError):
    """An endpoint cannot be registered (not async, or its name is taken)."""


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    name: str
    function: EndpointFunction
    method: str | None  # the declared method (upper-case), if any
    path: str | None  # the declared route path, if any
    module: str

    @property
    def where(self) -> str:
        return f"{self.module}.{getattr(self.function, '__qualname__', self.name)}"


_REGISTRY: dict[str, EndpointSpec] = {}


@overload
def endpoint(method: F, /) -> F: ...


@overload
def endpoint(
    method: str | None = None, path: str | None = None, *, name: str | None = None
) -> Callable[[F], F]: ...


def endpoint(
    method: str | F | None = None, path: str | None = None, *, name: str | None = None
) -> F | Callable[[F], F]:
    """Register an async function as a Python endpoint: ``@endpoint``, ``@endpoint("GET",
    "/home")`` or ``@endpoint(name="home-v2")``."""
    if callable(method):
        return _register(method, None, None, None)
    declared = method.upper() if isinstance(method, str) else None

    def decorate(function: F) -> F:
        return _register(function, declared, path, name)

    return decorate


def _register(function: F, method: str | None, path: str | None, name: str | None) -> F:
    key = name or function.__name__
    where = f"{function.__module__}.{function.__qualname__}"
    is_async: bool = inspect.iscoroutinefunction(function)  # a bool: no narrowing of F
    if not is_async:
        raise EndpointRegistrationError(f"endpoint '{key}' ({where}) must be an 'async def' function")
    spec = EndpointSpec(key, function, method, path, function.__module__)
    taken = _REGISTRY.get(key)
    if taken is not None and taken.where != spec.where:
        raise EndpointRegistrationError(
            f"endpoint name '{key}' is registered twice: by {taken.where} and by {spec.where}; "
            "give one of them name=..."
        )
    _REGISTRY[key] = spec  # the same function again (a module reload) replaces itself
    return function


def registered(name: str) -> EndpointSpec | None:
    return _REGISTRY.get(name)


def load_modules(
    modules: Sequence[str], paths: Sequence[str]
) -> tuple[dict[str, EndpointSpec], list[tuple[Loc, str]]]:
    """Import ``modules`` (after putting ``paths`` on the import path) and return the endpoints
    they (or their submodules) registered, with a located problem for each module that failed."""
    for directory in reversed(paths):
        absolute = os.path.abspath(directory)
        if absolute not in sys.path:
            sys.path.insert(0, absolute)
    problems: list[tuple[Loc, str]] = []
    for index, module in enumerate(modules):
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever a user module raises becomes a config error
            problems.append((("python", "modules", index), f"cannot import '{module}': {_describe(exc)}"))
    found = {
        name: spec
        for name, spec in _REGISTRY.items()
        if any(spec.module == m or spec.module.startswith(m + ".") for m in modules)
    }
    return found, problems


def _describe(exc: BaseException) -> str:
    """The error and where in the user's code it happened."""
    text = f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "importlib" not in f.filename]
    if frames and not isinstance(exc, ModuleNotFoundError):
        last = frames[-1]
        text += f" (at {last.filename}:{last.lineno})"
    return text
