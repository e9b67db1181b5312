"""``edgeway proto``: compile ``.proto`` files into typed Python for the service kit."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Compile .proto files into typed Python (gRPC).")


@app.callback()
def _proto() -> None:
    """Protocol Buffers for the kit's gRPC (docs/rpc.md)."""


@app.command("compile")
def compile_command(
    root: Path = typer.Argument(
        ..., help="The import root: every .proto under it is compiled, named by its path below it."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Where the Python goes (default: ROOT, beside the .proto files)."
    ),
    descriptor_set: Path | None = typer.Option(
        None,
        "--descriptor-set",
        help="Also write every file with its imports as one FileDescriptorSet here "
        "(what the gateway's transcoding and aggregate gRPC calls read).",
    ),
    check: bool = typer.Option(
        False, "--check", help="Write nothing; exit 1 listing the generated files that are missing or stale."
    ),
) -> None:
    """Compile every .proto under ROOT into *_pb2.py, *_pb2_grpc.py and their typed .pyi stubs
    (grpcio-tools, mypy-protobuf). Exit 2 when protoc refuses a file (file:line:col on stderr)."""
    from edgeway.service.grpc.compile import ProtoError, compile_protos, stale_files

    try:
        if check:
            stale = stale_files(root, out, descriptor_set)
            if stale:
                for path in stale:
                    typer.echo(f"stale: {path}", err=True)
                typer.echo(
                    f"regenerate: edgeway proto compile {root}"
                    + (f" --out {out}" if out else "")
                    + (f" --descriptor-set {descriptor_set}" if descriptor_set else ""),
                    err=True,
                )
                raise typer.Exit(1)
            typer.echo(f"ok: the code generated from {root} is current")
            return
        written = compile_protos(root, out, descriptor_set)
    except ProtoError as exc:
        typer.echo(f"edgeway: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {len(written)} files under {out or root}")
