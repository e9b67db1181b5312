"""``edgeway deploy``: Kubernetes manifests or a compose project from a system file."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Render Kubernetes manifests or a compose project.")

_TARGETS = ("kubernetes", "compose")
_PATTERNS = ("all", "direct", "gateway", "bff")


@app.callback()
def _deploy() -> None:
    """From a system file (edgeway.system.yaml) to a cluster (docs/deploy.md)."""


def _default_system() -> Path:
    """./edgeway.system.yaml, else the reference shop's (shipped inside the package)."""
    here = Path("edgeway.system.yaml")
    if here.exists():
        return here
    import edgeway

    return Path(edgeway.__file__).parent / "demo" / "shop" / "edgeway.system.yaml"


@app.command()
def render(
    target: str = typer.Option(..., "--target", "-t", help="kubernetes | compose"),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write into (created if missing)."),
    system: Path | None = typer.Option(
        None,
        "--system",
        "-s",
        help="The system file; default ./edgeway.system.yaml, else the reference shop's.",
    ),
    pattern: str | None = typer.Option(
        None, "--pattern", help="all | direct | gateway | bff (default: the file's)."
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", help="Kubernetes namespace (default: the system's name)."
    ),
    cluster_domain: str = typer.Option("cluster.local", "--cluster-domain", help="The cluster's DNS domain."),
) -> None:
    """Write the system's manifests into OUT: Kustomize-ready YAML (base/ and overlays/) for
    kubectl apply -k, or compose.yaml for docker compose. Secrets are created once, beside them.
    Exit 2 when the system or an edge config is invalid (nothing is written)."""
    from edgeway.deploy.render import render as do_render
    from edgeway.deploy.secrets import SecretsError
    from edgeway.gateway.core.errors import ConfigError
    from edgeway.system import load_system

    if target not in _TARGETS:
        raise typer.BadParameter(f"--target must be one of {', '.join(_TARGETS)}")
    if pattern is not None and pattern not in _PATTERNS:
        raise typer.BadParameter(f"--pattern must be one of {', '.join(_PATTERNS)}")
    if system is None:
        system = _default_system()
    try:
        loaded = load_system(system)
        rendered = do_render(
            loaded,
            "kubernetes" if target == "kubernetes" else "compose",
            out,
            pattern=pattern,  # type: ignore[arg-type]  # checked against _PATTERNS above
            namespace=namespace,
            cluster_domain=cluster_domain,
        )
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None
    except SecretsError as exc:
        typer.echo(f"edgeway deploy: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"rendered {system} for {target} into {out}: {len(rendered.files)} files")
    typer.echo(f"secrets: {rendered.secrets} (created once, kept on re-render; never commit them)")
    own = [(name, s.image) for name, s in loaded.model.services.items() if s.image and s.path]
    if own:
        typer.echo("images the services are built into (each from its own Dockerfile):")
        for name, image in own:
            typer.echo(f"  docker build -t {image} {_shown(loaded.service_path(name))}")
    if target == "kubernetes":
        typer.echo(f"apply: kubectl apply -k {out / 'overlays' / 'production'}")
    else:
        typer.echo(f"start: docker compose --project-directory {out} up -d")


def _shown(path: Path | None) -> str:
    """A path as the person typed it, relative to here when it is below."""
    if path is None:
        return "."
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
