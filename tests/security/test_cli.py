"""``edgeway security``: keys, users and clients from the command line."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from typer.testing import CliRunner

from edgeway.security.keys import FileKeyStore, generate_kek
from edgeway.security_service.cli import app

from .conftest import login, running_service, service_settings

runner = CliRunner()


def test_keys_rotate_creates_then_rotates_the_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    created = runner.invoke(app, ["keys", "rotate", "--keys", str(keys)])
    assert created.exit_code == 0, created.output
    assert os.stat(keys).st_mode & 0o777 == 0o600
    first = FileKeyStore(keys).load().active.kid
    rotated = runner.invoke(app, ["keys", "rotate", "--keys", str(keys), "--overlap", "60"])
    assert rotated.exit_code == 0, rotated.output
    ring = FileKeyStore(keys).load()
    assert ring.active.kid != first
    assert len(ring.keys) == 2
    listed = runner.invoke(app, ["keys", "list", "--keys", str(keys)])
    assert ring.active.kid in listed.output
    assert "PRIVATE" not in listed.output


def test_keys_commands_refuse_a_readable_key_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    runner.invoke(app, ["keys", "rotate", "--keys", str(keys)])
    os.chmod(keys, 0o644)
    result = runner.invoke(app, ["keys", "list", "--keys", str(keys)])
    assert result.exit_code == 1
    assert "chmod 600" in result.output


def test_encrypted_key_file_with_the_kek_from_the_environment(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    kek = runner.invoke(app, ["keys", "kek"]).output.strip()
    assert len(kek) == len(generate_kek())
    env = {"EDGEWAY_SECURITY_KEK": kek}
    assert runner.invoke(app, ["keys", "rotate", "--keys", str(keys)], env=env).exit_code == 0
    assert "PRIVATE KEY" not in keys.read_text()
    assert runner.invoke(app, ["keys", "list", "--keys", str(keys)], env=env).exit_code == 0
    assert runner.invoke(app, ["keys", "list", "--keys", str(keys)]).exit_code == 1


def test_user_and_client_added_by_the_cli_can_get_tokens(tmp_path: Path) -> None:
    # Sync on purpose: the CLI runs its own event loop.
    settings = service_settings(tmp_path)
    db = settings.db_url
    fast = {"EDGEWAY_SECURITY_ARGON2_MEMORY_COST": "8", "EDGEWAY_SECURITY_ARGON2_PARALLELISM": "1"}
    added = runner.invoke(
        app,
        ["user", "add", "carol", "--db", db, "--role", "customer", "--attr", "region=us"],
        input="carol-password\ncarol-password\n",
        env=fast,
    )
    assert added.exit_code == 0, added.output
    again = runner.invoke(app, ["user", "add", "carol", "--db", db, "--password", "whatever-123"], env=fast)
    assert again.exit_code == 1
    assert "exists already" in again.output
    client = runner.invoke(app, ["client", "add", "batch", "--db", db, "--scope", "orders"], env=fast)
    assert client.exit_code == 0, client.output
    secret = client.output.split("(shown once): ")[1].strip()

    async def check() -> None:
        async with running_service(settings) as service:
            response = await login(service, "carol", "carol-password")
            assert response.status_code == 200, response.text
            token = await service.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=("batch", secret)
            )
            assert token.status_code == 200
            assert token.json()["scope"] == "orders"

    asyncio.run(check())
