"""Seed files and settings files: interpolation, validation, idempotent application."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeway.security.errors import SecurityConfigError
from edgeway.security_service import SecuritySettings
from edgeway.security_service.seed import interpolate, load_seed

from .conftest import login, running_service, service_settings


def test_interpolation_uses_the_environment_and_defaults() -> None:
    env = {"ADMIN_PW": "s3cret"}
    assert interpolate("p: ${ADMIN_PW}, q: ${MISSING:-fallback}", env) == "p: s3cret, q: fallback"
    with pytest.raises(SecurityConfigError, match="MISSING is not set"):
        interpolate("p: ${MISSING}", env)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("groups: []", "unknown seed sections"),
        ("roles: {a: {permissions: [x], inherits: [ghost]}}", "unknown role 'ghost'"),
        ("policies: [{id: p, actions: [x], when: {eval: [1, 2]}}]", "unknown operator"),
        ("- just a list", "a seed file is a mapping"),
    ],
)
def test_bad_seed_files_are_refused_with_the_reason(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "seed.yaml"
    path.write_text(text)
    with pytest.raises(SecurityConfigError, match=message):
        load_seed(path)


async def test_seed_is_applied_once_and_leaves_existing_entries_alone(tmp_path: Path) -> None:
    settings = service_settings(tmp_path)
    async with running_service(settings) as service:
        assert (await login(service, "alice", "alice-password")).status_code == 200
    # Restart with the same seed: alice keeps her (unchanged) password, nothing is duplicated.
    async with running_service(settings) as service:
        assert (await login(service, "alice", "alice-password")).status_code == 200


def test_settings_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "security.yaml"
    path.write_text("issuer: https://auth.test\naccess_token_ttl: -5\n")
    with pytest.raises(SecurityConfigError, match=r"security.yaml: access_token_ttl"):
        SecuritySettings.from_file(path)
    path.write_text("issuer: https://auth.test\nsigning_alg: HS256\n")
    with pytest.raises(SecurityConfigError, match="signing_alg"):
        SecuritySettings.from_file(path)
    path.write_text("issuer: https://auth.test\n")
    assert (
        SecuritySettings.from_file(path, db_url="sqlite+aiosqlite:///x.db").db_url
        == "sqlite+aiosqlite:///x.db"
    )
