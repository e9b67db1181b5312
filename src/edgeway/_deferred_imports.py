"""Imports that third-party packages make at start-up for features edgeway does not use.

- nats-py (2.16) imports ``aiohttp`` and ``multidict`` at the top of ``nats.aio.transport``
  whenever they are installed, for its ``ws://``/``wss://`` transport only: about 150 ms of CPU
  per process, 13 % of a kit service's imports (docs/cluster-rehearsal.md, finding 15), paid by
  five services at once on a node restart while the other nodes serve.
- httpx imports its command line (``httpx._main``: click, rich, pygments, ~30 ms) in its
  ``__init__`` whenever those are installed, and rich always is (edgeway's own CLI uses it).

So the first import of each of those modules runs with the names of :data:`HIDDEN` hidden
(``None`` in ``sys.modules``, Python's own "not importable"); each package already falls back
on ``ImportError`` (nats-py binds ``aiohttp = None``, httpx defines a stub ``main``). Then the
module gets handles that import the real thing on first use: a ``ws://`` connection imports
aiohttp when it builds its session, ``httpx.main()`` imports the CLI when called. Where the
package is not installed nothing changes.

This is a finder in ``sys.meta_path``, installed by ``edgeway/__init__.py``, because any of a
dozen edgeway modules may be the first to import nats or httpx. It only touches those two
modules, only when the hidden ones were not imported before, and only while they run: anyone
else importing ``aiohttp`` gets the real package. If a future release needs a hidden module
while its module runs (an ``ImportError`` it does not catch), the module is run again with it
visible, as without this finder. For the milliseconds the module runs, another thread importing
a hidden name would be refused it; edgeway's processes import nats and httpx at start-up, on
their main thread.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["HIDDEN", "install"]

# module → what it imports only for a feature edgeway's processes do not use at start-up
HIDDEN: dict[str, tuple[str, ...]] = {
    "nats.aio.transport": ("aiohttp", "multidict"),  # nats-py's ws:// transport
    "httpx": ("httpx._main",),  # httpx's own command line; edgeway is its client, never its CLI
}


class _Deferred:
    """Stands in for a module in ``owner``'s globals; the first attribute read imports it."""

    def __init__(self, owner: ModuleType, name: str) -> None:
        self._owner = owner
        self._name = name

    def __bool__(self) -> bool:
        # nats-py tests `if not aiohttp:` before using it: installed means true, as the module.
        return True

    def __getattr__(self, attr: str) -> object:
        module = importlib.import_module(self._name)
        setattr(self._owner, self._name, module)  # later reads get the module itself
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<deferred import of {self._name!r} for {self._owner.__name__}>"


def _httpx_main(*args: Any, **kwargs: Any) -> Any:
    """``httpx.main``, the httpx command line, imported when it is run."""
    from httpx._main import main

    return main(*args, **kwargs)


def _bind(module: ModuleType, hidden: list[str]) -> None:
    """Replace what the module bound while ``hidden`` was not importable with deferred handles."""
    if module.__name__ == "httpx":
        if "httpx._main" in hidden:
            setattr(module, "main", _httpx_main)  # noqa: B010 (a ModuleType has no typed `main`)
        return
    for name in hidden:
        if getattr(module, name, ...) is None:
            setattr(module, name, _Deferred(module, name))


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _unhide(names: list[str]) -> None:
    for name in names:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]


class _HidingLoader(importlib.abc.Loader):
    """Runs a module of :data:`HIDDEN` with its hidden names unimportable, then binds handles."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def __getattr__(self, name: str) -> object:
        # get_source, get_code, is_package…: what tools ask of a module's loader
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # A hidden submodule (httpx._main) is looked up after its package's __path__ is set,
        # which is now: the module is created, not yet run.
        hidden = [name for name in HIDDEN[module.__name__] if name not in sys.modules and _installed(name)]
        for name in hidden:
            sys.modules[name] = None  # type: ignore[assignment]
        try:
            self._loader.exec_module(module)
        except ImportError as exc:
            if exc.name not in hidden:
                raise
            # This release cannot do without it at import: run the module as it expects.
            _unhide(hidden)
            self._loader.exec_module(module)
            return
        finally:
            _unhide(hidden)
        _bind(module, hidden)


class _DeferringFinder(importlib.abc.MetaPathFinder):
    """Finds a module of :data:`HIDDEN` through the other finders and gives it a hiding loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in HIDDEN:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _HidingLoader(spec.loader)
                return spec
        return None


def install() -> None:
    """Put the finder first in ``sys.meta_path``, once."""
    if not any(isinstance(finder, _DeferringFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _DeferringFinder())
