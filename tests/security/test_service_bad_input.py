"""Bad input to the security service is a problem response, never a 500, and never stored.

Found by fuzzing the service from its OpenAPI document: integers beyond 64 bits, nulls in PATCH
bodies that were stored and then broke every login, attributes too large for any verifier, an
unexpected error answered in plain text, PUTs whose body did not match their schema.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from edgeway.security.verify import MAX_TOKEN_BYTES
from edgeway.security_service import db
from edgeway.security_service.app import create_security_app

from .conftest import login, service_settings, token_for

HUGE = 2**64


async def admin_headers(service: httpx.AsyncClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {await token_for(service, 'root', 'root-password')}"}


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def test_integers_beyond_the_columns_are_refused_before_the_query(service: httpx.AsyncClient) -> None:
    # No token needed for the revocation feed: anybody could make it answer 500.
    for since in (HUGE, 2**31, -1):
        problem = assert_problem(await service.get("/revocations", params={"since": since}), 422)
        assert problem["errors"][0]["field"] == "since"
    headers = await admin_headers(service)
    assert_problem(await service.get("/admin/audit", params={"since_id": HUGE}, headers=headers), 422)
    assert_problem(await service.get("/admin/audit", params={"limit": HUGE}, headers=headers), 422)
    # in range: answered as before
    assert (await service.get("/revocations", params={"since": 2**31 - 1})).status_code == 200
    assert (
        await service.get("/admin/audit", params={"since_id": 0, "limit": 5000}, headers=headers)
    ).status_code == 200


@pytest.mark.parametrize("field", ["disabled", "roles", "attributes", "password"])
async def test_a_null_in_a_user_patch_is_refused_and_the_user_can_still_log_in(
    service: httpx.AsyncClient, field: str
) -> None:
    headers = await admin_headers(service)
    problem = assert_problem(
        await service.patch("/admin/users/alice", json={field: None}, headers=headers), 422
    )
    assert field in problem["detail"]
    user = (await service.get("/admin/users/alice", headers=headers)).json()
    assert user["roles"] == ["customer"]
    assert user["attributes"] == {"region": "eu"}
    assert user["disabled"] is False
    assert (await login(service, "alice", "alice-password")).status_code == 200


async def test_a_patch_leaves_out_what_it_does_not_name(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    patched = await service.patch("/admin/users/alice", json={"disabled": True}, headers=headers)
    assert patched.status_code == 200, patched.text
    assert (patched.json()["disabled"], patched.json()["roles"]) == (True, ["customer"])


@pytest.mark.parametrize("field", ["grant_types", "roles", "scopes", "attributes"])
async def test_a_null_in_a_client_patch_is_refused_and_the_client_still_gets_tokens(
    service: httpx.AsyncClient, field: str
) -> None:
    headers = await admin_headers(service)
    assert_problem(await service.patch("/admin/clients/reporting", json={field: None}, headers=headers), 422)
    token = await service.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("reporting", "reporting-secret-0123456789"),
    )
    assert token.status_code == 200, token.text


async def test_a_public_client_cannot_be_patched_into_client_credentials(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    patch = {"grant_types": ["client_credentials"]}
    assert_problem(await service.patch("/admin/clients/web", json=patch, headers=headers), 422)


async def test_attributes_too_large_for_a_token_are_refused_when_written(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    big = {"blob": "x" * 300_000}
    user = {"username": "big", "password": "big-password", "attributes": big}
    assert (
        "attributes"
        in assert_problem(await service.post("/admin/users", json=user, headers=headers), 422)["detail"]
    )
    assert_problem(await service.patch("/admin/users/alice", json={"attributes": big}, headers=headers), 422)
    client = {"client_id": "big", "attributes": big}
    assert_problem(await service.post("/admin/clients", json=client, headers=headers), 422)


async def test_no_token_is_issued_that_verifiers_would_refuse(tmp_path: Any) -> None:
    # An account written before the bound (or straight into the table) must get a clear error,
    # not a token every verifier refuses, and no refresh token may be stored for it.
    app = create_security_app(service_settings(tmp_path))
    async with app.router.lifespan_context(app):
        state = app.state.security
        await state.store.change("test", "update", db.users, "alice", {"attributes": {"blob": "x" * 20_000}})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://security.test") as client:
            refused = await login(client, "alice", "alice-password")
        problem = assert_problem(refused, 400)
        assert problem["error"] == "invalid_grant"
        assert str(MAX_TOKEN_BYTES) in problem["detail"]
        async with state.store.engine.connect() as conn:
            assert (await conn.execute(select(db.refresh_tokens))).all() == []


async def test_a_refresh_that_cannot_be_issued_does_not_spend_the_refresh_token(tmp_path: Any) -> None:
    app = create_security_app(service_settings(tmp_path))
    async with app.router.lifespan_context(app):
        state = app.state.security
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://security.test") as client:
            refresh = (await login(client, "alice", "alice-password")).json()["refresh_token"]
            await state.store.change("test", "update", db.users, "alice", {"attributes": {"b": "x" * 20_000}})
            form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "web"}
            assert_problem(await client.post("/oauth/token", data=form), 400)
            await state.store.change("test", "update", db.users, "alice", {"attributes": {}})
            again = await client.post("/oauth/token", data=form)
        assert again.status_code == 200, again.text


async def test_an_unexpected_error_is_a_problem_with_a_request_id(tmp_path: Any) -> None:
    app = create_security_app(service_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://security.test") as client:
            headers = await admin_headers(client)

            async def broken(*_args: Any, **_kwargs: Any) -> Any:
                raise RuntimeError("the database went away")

            app.state.security.store.rows = broken
            response = await client.get("/admin/users", headers={**headers, "X-Request-ID": "req-123"})
    problem = assert_problem(response, 500)
    assert problem["request_id"] == response.headers["x-request-id"] == "req-123"
    assert "database" not in response.text


async def test_put_of_a_role_or_scope_answers_what_was_stored(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    for path, body in (
        ("/admin/roles/auditor", {"permissions": ["audit:read"]}),
        ("/admin/scopes/reports", {}),
    ):
        created = await service.put(path, json=body, headers=headers)
        assert created.status_code == 201, created.text
        assert created.headers["content-type"] == "application/json"
        assert created.json()["name"] == path.rsplit("/", 1)[1]
        replaced = await service.put(path, json={**body, "description": "again"}, headers=headers)
        assert replaced.status_code == 200
        assert replaced.json()["description"] == "again"
    assert_problem(await service.put("/admin/scopes/bad name", json={}, headers=headers), 422)


def _operation(app: FastAPI, path: str, method: str) -> dict[str, Any]:
    operation: dict[str, Any] = app.openapi()["paths"][path][method]
    return operation


def test_the_openapi_document_declares_the_problems_it_answers(tmp_path: Any) -> None:
    app = create_security_app(service_settings(tmp_path))
    document = app.openapi()
    assert "Problem" in document["components"]["schemas"]
    assert "HTTPValidationError" not in document["components"]["schemas"]
    patch = _operation(app, "/admin/users/{username}", "patch")
    assert {"401", "403", "404", "422", "500"} <= set(patch["responses"])
    for status in ("401", "403", "404", "422", "500"):
        assert list(patch["responses"][status]["content"]) == ["application/problem+json"]
    assert "409" in _operation(app, "/admin/users", "post")["responses"]
    revocations = _operation(app, "/revocations", "get")["responses"]
    assert "401" not in revocations  # public
    assert {"422", "500"} <= set(revocations)
    put_role = _operation(app, "/admin/roles/{name}", "put")["responses"]
    assert {"200", "201"} <= set(put_role)
