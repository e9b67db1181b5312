"""``edgeway security ...``: run the security service and manage keys, users and clients.

Every command reads the same settings as the service: ``--config FILE`` (YAML), then
``EDGEWAY_SECURITY_*`` variables, then the flags given here.
"""

from __future__ import annotations

import asyncio
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from edgeway.security_service.settings import SecuritySettings

app = typer.Typer(no_args_is_help=True, help="Run and manage the security service.")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys: rotate, list, make a key-encryption key.")
user_app = typer.Typer(no_args_is_help=True, help="Users of the security service.")
client_app = typer.Typer(no_args_is_help=True, help="OAuth clients of the security service.")
app.add_typer(keys_app, name="keys")
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")

ConfigOption = typer.Option(None, "--config", "-c", help="YAML settings file.", exists=True, dir_okay=False)
DbOption = typer.Option(
    None, "--db", help="Database URL (sqlite+aiosqlite:///... or postgresql+asyncpg://...)."
)
KeysOption = typer.Option(None, "--keys", help="Key file (default ./edgeway-security-keys.json).")


def _settings(config: Path | None, **overrides: Any) -> SecuritySettings:
    from edgeway.security.errors import SecurityConfigError
    from edgeway.security_service.settings import SecuritySettings

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SecuritySettings.from_file(config, **given) if config else SecuritySettings(**given)
    except SecurityConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(1)


@app.command()
def serve(
    config: Path | None = ConfigOption,
    db: str | None = DbOption,
    keys: Path | None = KeysOption,
    seed: Path | None = typer.Option(None, "--seed", help="Seed file applied at start.", exists=True),
    issuer: str | None = typer.Option(None, "--issuer", help="The iss claim (usually the public URL)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8400, "--port"),
) -> None:
    """Run the security service (logs: JSON lines on stdout, level from ``log_level``)."""
    import uvicorn

    from edgeway.observability.logs import setup_logging
    from edgeway.security_service import create_security_app
    from edgeway.service.http import HeadOnlyHttpTools
    from edgeway.service.tls import uvicorn_tls_options

    settings = _settings(config, db_url=db, keys_path=keys, seed_file=seed, issuer=issuer)
    _require_clients(settings)
    try:
        setup_logging("security", settings.log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="log_level") from exc
    # log_config=None: uvicorn's own loggers go through the JSON handler instead of its text
    # formatter; its access log stays off (the kit writes a richer one in the schema).
    # HTTPS when the settings say so (tls_cert, tls_client_ca...: docs/tls-upstream.md).
    uvicorn.run(
        create_security_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        http=HeadOnlyHttpTools,
        **uvicorn_tls_options(settings),
    )


def _require_clients(settings: SecuritySettings) -> None:
    """Name the extra a setting needs before the server starts (inside it, a missing driver would
    be a traceback in the startup log)."""
    from edgeway.bus.brokers import broker_extra
    from edgeway.extras import database_extra, require

    driver = database_extra(settings.db_url)
    if driver is not None:
        require(driver, f"db_url {settings.db_url.split('://', 1)[0]}://…")
    if settings.bus_url:
        require(broker_extra(settings.bus_url), "bus_url")


@keys_app.command("rotate")
def keys_rotate(
    config: Path | None = ConfigOption,
    keys: Path | None = KeysOption,
    overlap: float | None = typer.Option(
        None, help="Seconds the old key stays published (default: token ttl + leeway)."
    ),
) -> None:
    """Make a new signing key; the old one keeps verifying for the overlap window.

    A running service reads the key file at start: restart it, or rotate through
    ``POST /admin/keys/rotate`` instead.
    """
    from edgeway.security.errors import KeyStoreError
    from edgeway.security.keys import FileKeyStore, load_kek

    settings = _settings(config, keys_path=keys)
    try:
        store = FileKeyStore(settings.keys_path, load_kek(path=settings.kek_file))
        if not store.exists():
            ring = store.load_or_create(settings.signing_alg)
            typer.echo(f"created {settings.keys_path} with key {ring.active.kid}")
            return
        ring = store.load()
        new = ring.rotate(overlap if overlap is not None else settings.overlap)
        ring.prune()
        store.save(ring)
    except KeyStoreError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"new active key {new.kid} ({new.alg}); {len(ring.keys)} keys published")


@keys_app.command("list")
def keys_list(config: Path | None = ConfigOption, keys: Path | None = KeysOption) -> None:
    """Show the key ids, algorithms and retirement times (never the keys)."""
    from edgeway.security.errors import KeyStoreError
    from edgeway.security.keys import FileKeyStore, load_kek

    settings = _settings(config, keys_path=keys)
    try:
        ring = FileKeyStore(settings.keys_path, load_kek(path=settings.kek_file)).load()
    except KeyStoreError as exc:
        raise _fail(str(exc)) from exc
    for key in ring.keys:
        state = "active" if key is ring.active else f"retires at {key.retire_at:.0f}"
        typer.echo(f"{key.kid}  {key.alg}  {state}")


@keys_app.command("kek")
def keys_kek() -> None:
    """Print a new key-encryption key for EDGEWAY_SECURITY_KEK."""
    from edgeway.security.keys import generate_kek

    typer.echo(generate_kek())


def _parse_attributes(pairs: list[str]) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--attr takes key=value, got {pair!r}")
        attributes[key] = value
    return attributes


async def _create(settings: SecuritySettings, table_name: str, key: str, values: dict[str, Any]) -> None:
    from edgeway.bus.outbox import Outbox
    from edgeway.security_service import db
    from edgeway.security_service.store import AlreadyExists, SecurityStore

    database = db.database(settings.db_url, settings.db_schema)
    # With a broker configured the running service relays the user event this change writes.
    outbox = Outbox(db.metadata, table_name=db.outbox.name) if settings.bus_url else None
    try:
        await database.create()
        table = db.metadata.tables[table_name]
        await SecurityStore(database.engine, outbox=outbox).change(
            f"cli:{getpass.getuser()}", "create", table, key, values
        )
    except AlreadyExists as exc:
        raise _fail(f"{key!r} exists already") from exc
    finally:
        await database.dispose()


@user_app.command("add")
def user_add(
    username: str,
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    role: list[str] = typer.Option([], "--role", "-r", help="Role to grant (repeatable)."),
    attr: list[str] = typer.Option(
        [], "--attr", help="Attribute key=value, becomes a token claim (repeatable)."
    ),
    config: Path | None = ConfigOption,
    db: str | None = DbOption,
) -> None:
    """Add a user."""
    import time

    from edgeway.security_service.passwords import Passwords

    settings = _settings(config, db_url=db)
    if len(password) < 8:
        raise _fail("the password needs at least 8 characters")
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism)
    now = time.time()
    values = {
        "password_hash": passwords.hash_sync(password),
        "roles": role,
        "attributes": _parse_attributes(attr),
        "disabled": False,
        "created_at": now,
        "updated_at": now,
    }
    asyncio.run(_create(settings, "edgeway_users", username, values))
    typer.echo(f"user {username} added with roles {role}")


@client_app.command("add")
def client_add(
    client_id: str,
    secret: str | None = typer.Option(None, help="Client secret; generated and printed when omitted."),
    public: bool = typer.Option(False, "--public", help="A public client (SPA, mobile app): no secret."),
    scope: list[str] = typer.Option([], "--scope", "-s", help="Scope the client may request (repeatable)."),
    role: list[str] = typer.Option([], "--role", "-r", help="Role of the client's own tokens (repeatable)."),
    grant: list[str] = typer.Option(
        [], "--grant", "-g", help="Grant type (repeatable; default client_credentials)."
    ),
    config: Path | None = ConfigOption,
    db: str | None = DbOption,
) -> None:
    """Add an OAuth client."""
    import secrets
    import time

    from edgeway.security_service.passwords import Passwords

    settings = _settings(config, db_url=db)
    grants = grant or (["password", "refresh_token"] if public else ["client_credentials"])
    if public and (secret or "client_credentials" in grants):
        raise _fail("a public client has no secret and cannot use client_credentials")
    generated = None if public or secret else secrets.token_urlsafe(32)
    value = secret or generated
    passwords = Passwords(settings.argon2_time_cost, settings.argon2_memory_cost, settings.argon2_parallelism)
    now = time.time()
    values: dict[str, Any] = {
        "secret_hash": passwords.hash_sync(value) if value else None,
        "roles": role,
        "scopes": scope,
        "grant_types": grants,
        "attributes": {},
        "created_at": now,
        "updated_at": now,
    }
    asyncio.run(_create(settings, "edgeway_clients", client_id, values))
    typer.echo(
        f"client {client_id} added ({'public' if public else 'confidential'}; grants {', '.join(grants)})"
    )
    if generated:
        typer.echo(f"client secret (shown once): {generated}")
