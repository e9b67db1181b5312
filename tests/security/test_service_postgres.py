"""The security service on the real PostgreSQL, each test in its own schema."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from conftest import require

from .conftest import login, running_service, service_settings, token_for

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require("postgres")
    name = f"edgeway_sec_{uuid.uuid4().hex[:12]}"
    yield name
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


async def test_login_refresh_reuse_and_audit_on_postgres(tmp_path: Path, schema: str) -> None:
    settings = service_settings(tmp_path, db_url=PG_URL, db_schema=schema)
    async with running_service(settings) as service:
        first = (await login(service, "alice", "alice-password")).json()
        refresh = {"grant_type": "refresh_token", "client_id": "web"}
        second = await service.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
        assert second.status_code == 200
        reuse = await service.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
        assert "reuse" in reuse.json()["detail"]
        feed = (await service.get("/revocations")).json()
        assert len(feed["entries"]) == 2

        headers = {"Authorization": f"Bearer {await token_for(service, 'root', 'root-password')}"}
        created = await service.post(
            "/admin/users", headers=headers, json={"username": "pg-user", "password": "pg-password"}
        )
        assert created.status_code == 201
        put = await service.put("/admin/policies/pg", headers=headers, json={"actions": ["pg:*"]})
        assert put.status_code == 201
        assert (await service.get("/policies")).json()["version"] >= 1
        audit = (await service.get("/admin/audit", headers=headers, params={"limit": 1000})).json()
        assert {"user.create", "policy.create", "refresh.reuse_detected"} <= {e["action"] for e in audit}

    # The tables really live in the test's schema.
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
    try:
        count = await conn.fetchval(f'SELECT count(*) FROM "{schema}".edgeway_users')
    finally:
        await conn.close()
    assert count == 4  # three seeded users and pg-user


async def test_lockout_on_postgres(tmp_path: Path, schema: str) -> None:
    settings = service_settings(tmp_path, db_url=PG_URL, db_schema=schema, lockout_threshold=2)
    async with running_service(settings) as service:
        await login(service, "alice", "wrong-1-password")
        await login(service, "alice", "wrong-2-password")
        assert (await login(service, "alice", "alice-password")).status_code == 423
