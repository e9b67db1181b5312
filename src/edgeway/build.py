"""How this installation of edgeway was built: with the hot path compiled by mypyc, or not.

A wheel built with the compile hook (scripts/hatch_build.py, ``./dev build``) carries C extension
modules next to the ``.py`` sources of the gateway engine; Python imports the extension. The
gateway logs which one it runs at start, and the benchmarks record it, because the two differ by
about a factor of two in CPU per request.
"""

from __future__ import annotations

import importlib.util
from typing import Literal

# A module every compiled build compiles (pyproject.toml lists them all).
PROBE = "edgeway.http.server"

Build = Literal["compiled", "interpreted"]


def engine_build() -> Build:
    """``"compiled"`` when the engine runs as mypyc extension modules, else ``"interpreted"``."""
    spec = importlib.util.find_spec(PROBE)
    origin = spec.origin if spec is not None else None
    if origin is not None and origin.endswith((".so", ".pyd")):
        return "compiled"
    return "interpreted"
