"""The security service is built on the service kit: the kit's endpoints and request ids, the kit's
settings (with the service's own names still read) and the kit's database, while its own CORS
policy, problem types and OAuth errors stay what they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeway.security_service import SecuritySettings
from edgeway.service import ServiceSettings

from .conftest import running_service, service_settings


async def test_the_security_service_has_the_kits_health_metrics_and_request_ids(tmp_path: Path) -> None:
    async with running_service(service_settings(tmp_path)) as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = await client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert (await client.get("/metrics")).status_code == 200
        response = await client.get("/no-such-page", headers={"X-Request-ID": "req-kit-1"})
        assert response.status_code == 404
        assert response.headers["x-request-id"] == "req-kit-1"
        assert response.json()["request_id"] == "req-kit-1"


async def test_its_own_problem_types_and_oauth_errors_are_the_kits_problem(tmp_path: Path) -> None:
    async with running_service(service_settings(tmp_path)) as client:
        response = await client.post("/oauth/token", data={"grant_type": "password", "client_id": "web"})
        assert response.status_code == 400
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert body["type"] == "https://edgeway.dev/problems/oauth/invalid_request"
        assert body["error"] == "invalid_request"
        assert body["instance"] == "/oauth/token"
        assert "request_id" in body
        expired = await client.get("/admin/users", headers={"Authorization": "Bearer not.a.token"})
        assert expired.status_code == 401
        assert expired.json()["type"] == "https://edgeway.dev/problems/unauthorized"
        assert expired.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


async def test_browsers_may_still_only_get_and_post(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, cors_origins=["https://app.test"])
    async with running_service(settings) as client:
        preflight = await client.options(
            "/oauth/token",
            headers={"Origin": "https://app.test", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-methods"] == "GET, POST"
        refused = await client.options(
            "/admin/users/alice",
            headers={"Origin": "https://app.test", "Access-Control-Request-Method": "DELETE"},
        )
        assert refused.status_code == 400


def test_its_settings_are_the_kits_under_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWAY_SECURITY_LOG_LEVEL", "debug")
    monkeypatch.setenv("EDGEWAY_LOG_LEVEL", "error")  # another service's variable
    settings = SecuritySettings()
    assert isinstance(settings, ServiceSettings)
    assert settings.log_level == "debug"
    assert settings.database_url == "sqlite+aiosqlite:///./edgeway-security.db"
    assert settings.port == 8400


def test_the_database_url_is_still_read_under_its_older_name(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        SecuritySettings.model_validate({"db_url": "sqlite+aiosqlite:///a.db"}).database_url
        == "sqlite+aiosqlite:///a.db"
    )
    monkeypatch.setenv("EDGEWAY_SECURITY_DB_URL", "sqlite+aiosqlite:///old.db")
    assert SecuritySettings().db_url == "sqlite+aiosqlite:///old.db"
    # The new name wins over the old one in the environment; a value given in code wins over both.
    monkeypatch.setenv("EDGEWAY_SECURITY_DATABASE_URL", "sqlite+aiosqlite:///new.db")
    assert SecuritySettings().database_url == "sqlite+aiosqlite:///new.db"
    assert (
        SecuritySettings.model_validate({"db_url": "sqlite+aiosqlite:///code.db"}).db_url
        == "sqlite+aiosqlite:///code.db"
    )


def test_unknown_settings_are_still_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        SecuritySettings(no_such_setting=1)  # type: ignore[call-arg]
