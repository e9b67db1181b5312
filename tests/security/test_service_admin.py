"""The admin API: admin role required, CRUD, audit with before/after, policy validation, key rotation."""

from __future__ import annotations

import httpx
import pytest

from edgeway.security.verify import KeySet, TokenVerifier

from .conftest import ISSUER, login, token_for


async def admin_headers(service: httpx.AsyncClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {await token_for(service, 'root', 'root-password')}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/users"),
        ("POST", "/admin/keys/rotate"),
        ("PUT", "/admin/policies/x"),
        ("GET", "/admin/audit"),
    ],
)
async def test_admin_api_requires_a_token_and_the_admin_role(
    service: httpx.AsyncClient, method: str, path: str
) -> None:
    anonymous = await service.request(method, path, json={})
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.json()["reason"] == "missing"
    customer = {"Authorization": f"Bearer {await token_for(service, 'alice', 'alice-password')}"}
    forbidden = await service.request(method, path, headers=customer, json={})
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    forged = await service.request(method, path, headers={"Authorization": "Bearer a.b.c"}, json={})
    assert forged.status_code == 401


async def test_user_crud_is_audited_without_secrets(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    created = await service.post(
        "/admin/users",
        headers=headers,
        json={
            "username": "bob",
            "password": "bob-password",
            "roles": ["customer"],
            "attributes": {"region": "us"},
        },
    )
    assert created.status_code == 201, created.text
    assert "password_hash" not in created.json()
    assert (await login(service, "bob", "bob-password")).status_code == 200

    duplicate = await service.post(
        "/admin/users", headers=headers, json={"username": "bob", "password": "x" * 8}
    )
    assert duplicate.status_code == 409

    patched = await service.patch(
        "/admin/users/bob", headers=headers, json={"roles": ["support"], "password": "new-bob-password"}
    )
    assert patched.json()["roles"] == ["support"]
    assert (await login(service, "bob", "bob-password")).status_code == 400
    assert (await login(service, "bob", "new-bob-password")).status_code == 200

    assert (await service.delete("/admin/users/bob", headers=headers)).status_code == 204
    assert (await service.get("/admin/users/bob", headers=headers)).status_code == 404

    audit = (await service.get("/admin/audit", headers=headers, params={"limit": 1000})).json()
    bob = [e for e in audit if e["target"] == "user:bob"]
    assert [e["action"] for e in bob] == ["user.create", "user.update", "user.delete"]
    assert all(e["actor"] == "user:root" and e["at"] > 0 for e in bob)
    create, update, delete = bob
    assert create["before"] is None
    assert create["after"]["roles"] == ["customer"]
    assert update["before"]["roles"] == ["customer"]
    assert update["after"]["roles"] == ["support"]
    assert update["after"]["password"] == "<changed>"
    assert delete["after"] is None
    assert "argon2" not in str(audit)


async def test_client_created_without_a_secret_gets_one_shown_once(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    created = (
        await service.post(
            "/admin/clients",
            headers=headers,
            json={"client_id": "payments", "scopes": ["orders"], "roles": ["svc"]},
        )
    ).json()
    secret = created["client_secret"]
    assert "client_secret" not in (await service.get("/admin/clients/payments", headers=headers)).json()
    token = await service.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("payments", secret)
    )
    assert token.status_code == 200
    rotated = (
        await service.patch("/admin/clients/payments", headers=headers, json={"rotate_secret": True})
    ).json()
    again = await service.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("payments", secret)
    )
    assert again.status_code == 401
    fresh = await service.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("payments", rotated["client_secret"])
    )
    assert fresh.status_code == 200


async def test_policy_changes_are_validated_and_bump_the_version(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    before = await service.get("/policies")
    version = before.json()["version"]
    bad = await service.put(
        "/admin/policies/p1", headers=headers, json={"actions": ["x"], "when": {"eval": ["1", "1"]}}
    )
    assert bad.status_code == 422
    assert "unknown operator" in bad.json()["detail"]
    bad_role = await service.put(
        "/admin/roles/r1", headers=headers, json={"permissions": ["x"], "inherits": ["ghost"]}
    )
    assert bad_role.status_code == 422
    assert (await service.get("/policies")).json()["version"] == version

    good = await service.put(
        "/admin/policies/no-weekend-refunds",
        headers=headers,
        json={
            "effect": "deny",
            "actions": ["refunds:*"],
            "when": {"in": ["context.weekday", ["sat", "sun"]]},
        },
    )
    assert good.status_code == 201
    after = (await service.get("/policies")).json()
    assert after["version"] == version + 1
    assert "no-weekend-refunds" in [p["id"] for p in after["policies"]]
    assert (
        await service.put("/admin/scopes/reports", headers=headers, json={"description": "r"})
    ).status_code == 201


async def test_policies_endpoint_answers_304_for_an_unchanged_etag(service: httpx.AsyncClient) -> None:
    first = await service.get("/policies")
    etag = first.headers["etag"]
    assert (await service.get("/policies", headers={"If-None-Match": etag})).status_code == 304
    await service.put(
        "/admin/roles/auditor", headers=await admin_headers(service), json={"permissions": ["audit:read"]}
    )
    changed = await service.get("/policies", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.json()["roles"]["auditor"]["permissions"] == ["audit:read"]


async def test_authorize_decides_with_the_service_policies(service: httpx.AsyncClient) -> None:
    alice = {"Authorization": f"Bearer {await token_for(service, 'alice', 'alice-password')}"}
    own = await service.post(
        "/authorize", headers=alice, json={"action": "orders:read", "resource": {"owner": "alice"}}
    )
    assert own.json()["allowed"] is True
    assert own.json()["policy_id"] == "owner-reads-own-order"
    other = await service.post(
        "/authorize", headers=alice, json={"action": "orders:read", "resource": {"owner": "bob"}}
    )
    assert other.json()["allowed"] is False
    # A service asks on behalf of a user by passing that user's token.
    sam_token = await token_for(service, "sam", "sam-password")
    region = await service.post(
        "/authorize",
        headers=alice,
        json={"action": "orders:read", "resource": {"owner": "bob", "region": "eu"}, "token": sam_token},
    )
    assert region.json() == {
        "allowed": True,
        "reason": "allowed by policy support-reads-region",
        "policy_id": "support-reads-region",
        "version": region.json()["version"],
        "subject": "sam",
    }
    assert (await service.post("/authorize", json={"action": "orders:read"})).status_code == 401


async def test_key_rotation_keeps_old_tokens_valid_during_the_overlap(service: httpx.AsyncClient) -> None:
    headers = await admin_headers(service)
    old_token = (await login(service, "alice", "alice-password")).json()["access_token"]
    old_kid = (await service.get("/admin/keys", headers=headers)).json()[0]["kid"]
    keys = (await service.post("/admin/keys/rotate", headers=headers)).json()
    assert len(keys) == 2
    active = [k for k in keys if k["active"]]
    assert active[0]["kid"] != old_kid
    assert [k["retire_at"] is not None for k in keys if k["kid"] == old_kid] == [True]

    jwks = (await service.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {old_kid, active[0]["kid"]}
    verifier = TokenVerifier(KeySet.from_jwks(jwks), issuer=ISSUER, audience="shop")
    assert verifier.verify(old_token).kid == old_kid
    new_token = (await login(service, "alice", "alice-password")).json()["access_token"]
    assert verifier.verify(new_token).kid == active[0]["kid"]
    # The admin token signed by the old key still works on the service too.
    assert (await service.get("/admin/keys", headers=headers)).status_code == 200
    audit = (await service.get("/admin/audit", headers=headers, params={"limit": 1000})).json()
    assert any(e["action"] == "keys.rotate" for e in audit)


async def test_errors_are_problem_json(service: httpx.AsyncClient) -> None:
    response = await service.get("/no/such/path")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert body["instance"] == "/no/such/path"
    invalid = await service.post(
        "/admin/users", headers=await admin_headers(service), json={"username": "x y"}
    )
    assert invalid.status_code == 422
    assert {e["field"] for e in invalid.json()["errors"]} >= {"username", "password"}
