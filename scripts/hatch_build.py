"""Hatch build hook: compile the gateway's hot path to C extensions with mypyc.

Off by default. ``HATCH_BUILD_HOOK_ENABLE_CUSTOM=1`` turns it on for a wheel build (``./dev build``
does this); the wheel then carries one extension module per listed source file, next to the same
``.py`` files, and Python imports the extension. On the reference machine this halves the
gateway's CPU per proxied request (docs/benchmarks.md).

Why not the hatch-mypyc plugin: it builds the extensions *in place* (``build_ext --inplace``), so
they land in ``src/`` next to the sources, where an editable install then imports them instead of
the ``.py`` a developer is editing; and it hides ``pyproject.toml`` while it runs, so mypy loses
the project's settings (the pydantic plugin, the untyped C libraries). This hook builds in a
temporary directory and never for an editable install.

The modules to compile are ``tool.hatch.build.targets.wheel.hooks.custom.compile`` in
``pyproject.toml``. A module there must not be monkeypatched at run time and must hold exactly to
its annotations: compiled code checks them (the tests run against a compiled build in CI).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# One shared library for every compiled module: its name in site-packages.
GROUP = "edgeway"


class CompileHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    _temp: list[Path]

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        self._temp = []
        if self.target_name != "wheel" or version == "editable":
            return
        sources = self._sources()
        built = self._temp_dir("edgeway-mypyc-")
        self._compile(sources, built)
        src_root = Path(self.root) / "src"
        for path in sorted(built.rglob("*.so")) + sorted(built.rglob("*.pyd")):
            build_data["force_include"][str(path)] = str(path.relative_to(built))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        self.app.display_info(f"mypyc: compiled {len(sources)} modules of {src_root}")

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        # The extension modules are read into the wheel by now.
        for path in getattr(self, "_temp", []):
            shutil.rmtree(path, ignore_errors=True)

    def _temp_dir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._temp.append(path)
        return path

    def _sources(self) -> list[str]:
        listed = self.config.get("compile")
        if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed) or not listed:
            raise ValueError(
                "pyproject.toml: tool.hatch.build.targets.wheel.hooks.custom.compile must be a "
                "non-empty list of source paths"
            )
        missing = [p for p in listed if not (Path(self.root) / p).is_file()]
        if missing:
            raise FileNotFoundError(
                "pyproject.toml: tool.hatch.build.targets.wheel.hooks.custom.compile names "
                f"files that do not exist: {', '.join(missing)}"
            )
        return list(listed)

    def _compile(self, sources: list[str], out: Path) -> None:
        # Imported here: hatchling loads this file for every build, and mypy and setuptools are
        # build requirements only when this hook is enabled.
        from mypyc.build import mypycify
        from setuptools import Distribution

        work = self._temp_dir("edgeway-mypyc-c-")
        here = os.getcwd()
        # mypy reads the project's settings from the working directory; the paths it reports are
        # relative to it too.
        os.chdir(self.root)
        try:
            extensions = mypycify(
                sources,
                opt_level="3",
                debug_level="0",
                group_name=GROUP,
                multi_file=True,  # one C file per module, so the C compiler can run in parallel
                target_dir=str(work / "c"),
            )
        finally:
            os.chdir(here)
        dist = Distribution({"name": "edgeway", "ext_modules": extensions})
        build_ext: Any = dist.get_command_obj("build_ext")
        build_ext.build_lib = str(out)
        build_ext.build_temp = str(work / "obj")
        build_ext.parallel = os.cpu_count() or 1
        build_ext.ensure_finalized()
        # The generated C includes its headers by paths relative to where mypycify ran.
        os.chdir(self.root)
        try:
            build_ext.run()
        finally:
            os.chdir(here)
        if not any(out.rglob("*.so")) and sys.platform != "win32":
            raise RuntimeError(f"mypyc produced no extension modules in {out}")
