"""``edgeway tls``: certificates for development from a local CA (:mod:`edgeway.pki.local_ca`)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    no_args_is_help=True, help="Certificates for development: a local CA and loopback certificates."
)

Directory = typer.Argument(..., help="Directory holding the CA (ca.pem, ca.key) and the certificates.")


def _fail(message: str) -> None:
    typer.secho(f"edgeway tls: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@app.command()
def ca(
    directory: Path = Directory,
    any_name: bool = typer.Option(
        False,
        "--any-name",
        help="A CA that may vouch for any name (default: only localhost, .test, .internal and the "
        "loopback addresses, so its key cannot impersonate a real site).",
    ),
) -> None:
    """Make a local CA in DIRECTORY (ca.pem, ca.key); an existing one is kept."""
    from edgeway.pki.local_ca import CA_FILE, LocalCA, LocalCAError

    try:
        _, created = LocalCA.in_directory(directory, constrained=not any_name)
    except LocalCAError as exc:
        _fail(str(exc))
    state = "made" if created else "kept (already there)"
    typer.echo(f"{directory / CA_FILE}: local CA {state}; trust it in clients (curl --cacert, a browser).")


@app.command()
def cert(
    directory: Path = Directory,
    names: list[str] = typer.Argument(
        ...,
        help="Host names and IP addresses the certificate is for; for --client, its name (the "
        "common name) then any URIs or email addresses it holds.",
    ),
    name: str = typer.Option("server", "--out", help="Write <out>.pem and <out>.key."),
    client: bool = typer.Option(False, "--client", help="A client certificate (mTLS) instead of a server's."),
    days: int = typer.Option(397, min=1, max=397, help="Days the certificate is valid."),
) -> None:
    """Issue a certificate for NAMES from the local CA in DIRECTORY (made there if absent)."""
    from edgeway.pki.local_ca import LocalCA, LocalCAError

    try:
        authority, _ = LocalCA.in_directory(directory)
        issued = authority.issue(
            names[1:] if client else names,
            server=not client,
            client=client,
            common_name=names[0],
            days=days,
        )
    except LocalCAError as exc:
        _fail(str(exc))
        return
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    issued.write(cert_file, key_file)
    kind = "client" if client else "server"
    typer.echo(f"{cert_file}, {key_file}: {kind} certificate for {', '.join(names)}")


@app.command("dev-certs")
def dev_certs(
    directory: Path = Directory,
    names: list[str] = typer.Option(
        ["localhost", "127.0.0.1", "::1"], "--name", help="Names of the server certificate (repeatable)."
    ),
) -> None:
    """The local CA of DIRECTORY (made if absent), a server certificate for loopback and a client
    certificate: everything a TLS listener with mTLS needs on this machine."""
    from edgeway.pki.local_ca import LocalCAError, dev_certificates

    try:
        made = dev_certificates(directory, names)
    except LocalCAError as exc:
        _fail(str(exc))
        return
    state = "made" if made.created_ca else "kept"
    typer.echo(f"CA ({state}):  {made.ca}")
    typer.echo(f"server:     {made.server_cert} {made.server_key} ({', '.join(names)})")
    typer.echo(f"client:     {made.client_cert} {made.client_key}")
    typer.echo(f"trust it:   curl --cacert {made.ca} https://localhost:8443/")
