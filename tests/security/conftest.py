"""Fixtures for the security service tests: an app on a temp SQLite file, a seeded shop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeway.observability.tracing import Tracing
from edgeway.security_service import SecuritySettings, create_security_app

ISSUER = "https://auth.test"

SEED = """
scopes: [catalog, orders, profile]
roles:
  admin: ["*"]
  customer: ["catalog:read", "orders:create"]
  support:
    permissions: ["tickets:*"]
    inherits: [customer]
users:
  - {username: root, password: "root-password", roles: [admin]}
  - {username: alice, password: "alice-password", roles: [customer], attributes: {region: eu}}
  - {username: sam, password: "sam-password", roles: [support], attributes: {region: eu}}
clients:
  - {client_id: web, public: true, grant_types: [password, refresh_token], scopes: [catalog, orders, profile]}
  - client_id: reporting
    secret: "reporting-secret-0123456789"
    roles: [reporter]
    scopes: [orders]
    grant_types: [client_credentials]
    attributes: {team: finance}
policies:
  - id: owner-reads-own-order
    actions: ["orders:read"]
    when: {eq: [resource.owner, subject.sub]}
  - id: support-reads-region
    actions: ["orders:read"]
    roles: [support]
    when: {eq: [subject.region, resource.region]}
"""


def service_settings(tmp_path: Path, **overrides: Any) -> SecuritySettings:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": ["shop"],
        "db_url": f"sqlite+aiosqlite:///{tmp_path / 'security.db'}",
        "keys_path": tmp_path / "keys.json",
        "seed_file": seed,
        # Cheap hashing: these tests are about flows, not about argon2's cost.
        "argon2_time_cost": 1,
        "argon2_memory_cost": 8,
        "argon2_parallelism": 1,
        "throttle_base_delay": 0.0,
    }
    values.update(overrides)
    return SecuritySettings(**values)


@contextlib.asynccontextmanager
async def running_service(
    settings: SecuritySettings, *, tracing: Tracing | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_security_app(settings, tracing=tracing)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://security.test") as client:
            yield client


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_service(service_settings(tmp_path)) as client:
        yield client


async def login(client: httpx.AsyncClient, username: str, password: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "password", "username": username, "password": password, "client_id": "web", **extra}
    return await client.post("/oauth/token", data=form)


async def token_for(client: httpx.AsyncClient, username: str, password: str) -> str:
    response = await login(client, username, password)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])
