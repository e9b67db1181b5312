"""``.proto`` files to typed Python: what ``edgeway proto compile`` runs (``proto`` extra).

Every ``.proto`` under a root is compiled with grpcio-tools' ``protoc`` into, beside it (or under
``out``), ``<name>_pb2.py`` (the messages), ``<name>_pb2_grpc.py`` (the servicer base class, the
stub, ``add_<Service>Servicer_to_server``) and their typed stubs ``.pyi`` from mypy-protobuf,
which pass ``mypy --strict`` (a stub is typed as its ``...AsyncStub`` on an asyncio channel).
The root is also the import root: ``shop/inventory/v1/inventory.proto`` under ``src`` is the
module ``shop.inventory.v1.inventory_pb2``, and ``import "shop/common/v1/money.proto";`` in a
``.proto`` becomes that import in Python. A package directory without an ``__init__.py`` gets
an empty one (mypy and pytest find modules by them).

Why a command and committed output, rather than generating at import or test time: the
generated modules are code the service imports and mypy checks like the rest, reviewed in the
diff when a ``.proto`` changes, and an installed service needs no compiler. ``--check``
compiles into a temporary directory and reports any file that differs from what is committed,
so CI catches a ``.proto`` edited without regenerating (or a generator upgrade).

protoc's own errors name the file, line and column; they are raised as :class:`ProtoError`.
"""

from __future__ import annotations

import filecmp
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["GENERATED_SUFFIXES", "ProtoError", "compile_protos", "stale_files"]

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


class ProtoError(RuntimeError):
    """protoc refused the ``.proto`` files (its message names file:line:col), or a tool is missing."""


def _plugin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ProtoError(f"{name} (mypy-protobuf) is not installed: pip install 'edgeway[proto]'")
    return found


def _sources(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ProtoError(f"{root} is not a directory of .proto files")
    found = sorted(p.relative_to(root) for p in root.rglob("*.proto") if p.is_file())
    if not found:
        raise ProtoError(f"no .proto file under {root}")
    return found


def compile_protos(root: Path, out: Path | None = None, descriptor_set: Path | None = None) -> list[Path]:
    """Compile every ``.proto`` under ``root`` into ``out`` (default: beside them); the files
    written, generated modules and the ``__init__.py`` files added.

    ``descriptor_set``: also write every file with its imports as one ``FileDescriptorSet``
    there, what the gateway's JSON-to-gRPC transcoding and aggregate gRPC calls read (it has no
    generated code to import, only descriptors)."""
    root = root.resolve()
    out = out.resolve() if out is not None else root
    sources = _sources(root)
    out.mkdir(parents=True, exist_ok=True)
    described: list[str] = []
    if descriptor_set is not None:
        descriptor_set = descriptor_set.resolve()
        descriptor_set.parent.mkdir(parents=True, exist_ok=True)
        described = ["--include_imports", f"--descriptor_set_out={descriptor_set}"]
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={root}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *described,
        *(str(s) for s in sources),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=root)
    if done.returncode != 0:
        raise ProtoError(f"protoc failed on {root}:\n{done.stderr.strip() or done.stdout.strip()}")
    written: list[Path] = []
    for source in sources:
        stem = source.with_suffix("")
        written.extend(
            out / f"{stem}{suffix}" for suffix in GENERATED_SUFFIXES if (out / f"{stem}{suffix}").is_file()
        )
        package = (out / source).parent
        while package != out and package.is_relative_to(out):
            init = package / "__init__.py"
            if not init.exists():
                init.write_text("")
                written.append(init)
            package = package.parent
    if descriptor_set is not None:
        written.append(descriptor_set)
    return written


def stale_files(root: Path, out: Path | None = None, descriptor_set: Path | None = None) -> list[Path]:
    """What ``compile_protos(root, out, descriptor_set)`` would change: generated files (and
    ``__init__.py`` files, and the descriptor set) that are missing or differ. Empty: the
    committed code is current."""
    out = out if out is not None else root
    with tempfile.TemporaryDirectory(prefix="edgeway-proto-") as scratch:
        fresh = Path(scratch).resolve() / "out"
        fresh_set = Path(scratch).resolve() / "descriptors.pb" if descriptor_set is not None else None
        stale: list[Path] = []
        for generated in compile_protos(root, fresh, fresh_set):
            if generated == fresh_set and descriptor_set is not None:
                if not descriptor_set.is_file() or not filecmp.cmp(generated, descriptor_set, shallow=False):
                    stale.append(descriptor_set)
                continue
            relative = generated.relative_to(fresh)
            committed = out / relative
            if not committed.is_file():
                stale.append(committed)
            elif generated.name != "__init__.py" and not filecmp.cmp(generated, committed, shallow=False):
                # A package's __init__.py is only created when missing, never rewritten: one
                # with code in it (a contract inside an existing package) is current.
                stale.append(committed)
        return stale
