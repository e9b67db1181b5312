"""The token endpoint: password grant, client credentials, refresh rotation and reuse, revoke."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgeway.security.errors import TokenRevoked
from edgeway.security.keys import KeyRing, b64url_encode
from edgeway.security.verify import KeySet, TokenVerifier
from edgeway.security_service import create_security_app

from .conftest import ISSUER, login, service_settings


async def verifier_for(client: httpx.AsyncClient) -> TokenVerifier:
    jwks = (await client.get("/.well-known/jwks.json")).json()
    return TokenVerifier(KeySet.from_jwks(jwks), issuer=ISSUER, audience="shop")


async def test_password_grant_issues_a_verifiable_token_with_roles_and_attributes(
    service: httpx.AsyncClient,
) -> None:
    response = await login(service, "alice", "alice-password", scope="catalog orders")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "catalog orders"
    assert body["refresh_token"].startswith("ewr_")
    claims = (await verifier_for(service)).verify(body["access_token"])
    assert claims.sub == "alice"
    assert claims.roles == {"customer"}
    assert claims.scopes == {"catalog", "orders"}
    assert claims.raw["region"] == "eu"
    assert claims.raw["client_id"] == "web"
    assert isinstance(claims.raw["sid"], str)


async def test_wrong_password_and_unknown_user_get_the_same_answer(service: httpx.AsyncClient) -> None:
    wrong = await login(service, "alice", "nope-nope")
    ghost = await login(service, "ghost", "nope-nope")
    assert wrong.status_code == ghost.status_code == 400
    assert wrong.headers["content-type"] == "application/problem+json"
    assert wrong.json()["error"] == ghost.json()["error"] == "invalid_grant"
    assert wrong.json()["detail"] == ghost.json()["detail"]


async def test_unregistered_scope_is_refused(service: httpx.AsyncClient) -> None:
    response = await login(service, "alice", "alice-password", scope="catalog admin:everything")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


async def test_client_credentials_with_basic_auth(service: httpx.AsyncClient) -> None:
    response = await service.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("reporting", "reporting-secret-0123456789"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    claims = (await verifier_for(service)).verify(body["access_token"])
    assert claims.sub == "reporting"
    assert claims.roles == {"reporter"}
    assert claims.scopes == {"orders"}
    assert claims.raw["team"] == "finance"


async def test_client_credentials_with_a_wrong_secret_is_invalid_client(service: httpx.AsyncClient) -> None:
    response = await service.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "reporting",
            "client_secret": "wrong-secret-000000",
        },
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["www-authenticate"].startswith("Basic")


async def test_public_client_cannot_use_client_credentials(service: httpx.AsyncClient) -> None:
    response = await service.post(
        "/oauth/token", data={"grant_type": "client_credentials", "client_id": "web"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"


async def test_unknown_grant_type_and_repeated_parameters_are_refused(service: httpx.AsyncClient) -> None:
    response = await service.post("/oauth/token", data={"grant_type": "implicit"})
    assert response.json()["error"] == "unsupported_grant_type"
    response = await service.post(
        "/oauth/token",
        content=b"grant_type=password&username=alice&username=root&password=x",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert "repeated" in response.json()["detail"]


async def test_refresh_rotates_the_refresh_token(service: httpx.AsyncClient) -> None:
    first = (await login(service, "alice", "alice-password")).json()
    response = await service.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": "web"},
    )
    assert response.status_code == 200, response.text
    second = response.json()
    assert second["refresh_token"] != first["refresh_token"]
    verifier = await verifier_for(service)
    assert (
        verifier.verify(second["access_token"]).raw["sid"]
        == verifier.verify(first["access_token"]).raw["sid"]
    )


async def test_refresh_token_reuse_revokes_the_whole_family(service: httpx.AsyncClient) -> None:
    first = (await login(service, "alice", "alice-password")).json()
    refresh = {"grant_type": "refresh_token", "client_id": "web"}
    second = (
        await service.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
    ).json()

    # The first refresh token was copied by an attacker and is now presented again.
    reuse = await service.post("/oauth/token", data={**refresh, "refresh_token": first["refresh_token"]})
    assert reuse.status_code == 400
    assert "reuse" in reuse.json()["detail"]

    # The legitimate, newest refresh token of the family is dead too.
    after = await service.post("/oauth/token", data={**refresh, "refresh_token": second["refresh_token"]})
    assert after.status_code == 400
    assert after.json()["error"] == "invalid_grant"

    # And the family's live access tokens are on the deny-list gateways poll.
    feed = (await service.get("/revocations", params={"since": 0})).json()
    verifier = await verifier_for(service)
    revoked = {e["jti"] for e in feed["entries"]}
    assert verifier.verify(first["access_token"]).jti in revoked
    assert verifier.verify(second["access_token"]).jti in revoked
    for entry in feed["entries"]:
        verifier.revocations.add(entry["jti"], entry["exp"])
    with pytest.raises(TokenRevoked):
        verifier.verify(second["access_token"])


async def test_refresh_token_of_another_client_is_refused(service: httpx.AsyncClient) -> None:
    first = (await login(service, "alice", "alice-password")).json()
    response = await service.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=("reporting", "reporting-secret-0123456789"),
    )
    assert response.status_code == 400


async def test_refresh_may_narrow_but_not_widen_the_scope(service: httpx.AsyncClient) -> None:
    first = (await login(service, "alice", "alice-password", scope="catalog orders")).json()
    base = {"grant_type": "refresh_token", "client_id": "web"}
    wider = await service.post(
        "/oauth/token", data={**base, "refresh_token": first["refresh_token"], "scope": "profile"}
    )
    assert wider.json()["error"] == "invalid_scope"
    narrower = await service.post(
        "/oauth/token", data={**base, "refresh_token": first["refresh_token"], "scope": "catalog"}
    )
    assert narrower.json()["scope"] == "catalog"


async def test_logout_revokes_the_access_token_and_the_refresh_family(service: httpx.AsyncClient) -> None:
    tokens = (await login(service, "alice", "alice-password")).json()
    response = await service.post(
        "/oauth/revoke", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 200
    feed = (await service.get("/revocations")).json()
    jti = (await verifier_for(service)).verify(tokens["access_token"]).jti
    assert jti in {e["jti"] for e in feed["entries"]}
    assert all(e["exp"] > 0 for e in feed["entries"])
    refreshed = await service.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": "web"},
    )
    assert refreshed.status_code == 400
    # The service itself refuses the revoked token on its protected endpoints.
    denied = await service.post(
        "/authorize",
        json={"action": "catalog:read"},
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )
    assert denied.status_code == 401
    assert denied.json()["reason"] == "revoked"


async def test_revoking_a_refresh_token_answers_200_even_when_unknown(service: httpx.AsyncClient) -> None:
    assert (await service.post("/oauth/revoke", data={"token": "ewr_not-a-real-token"})).status_code == 200
    assert (await service.post("/oauth/revoke", data={"token": "garbage"})).status_code == 200


async def test_revocation_feed_pages_with_a_cursor(service: httpx.AsyncClient) -> None:
    for _ in range(2):
        tokens = (await login(service, "alice", "alice-password")).json()
        await service.post("/oauth/revoke", data={"token": tokens["access_token"]})
    first = (await service.get("/revocations", params={"since": 0})).json()
    assert len(first["entries"]) >= 2
    again = (await service.get("/revocations", params={"since": first["cursor"]})).json()
    assert again["entries"] == []
    assert again["cursor"] == first["cursor"]


async def test_discovery_document_points_at_the_endpoints(service: httpx.AsyncClient) -> None:
    config = (await service.get("/.well-known/openid-configuration")).json()
    assert config["issuer"] == ISSUER
    assert config["jwks_uri"] == "http://security.test/.well-known/jwks.json"
    assert config["token_endpoint"] == "http://security.test/oauth/token"
    assert "refresh_token" in config["grant_types_supported"]
    assert set(config["scopes_supported"]) == {"catalog", "orders", "profile"}


async def test_malformed_tokens_are_401_problems_at_every_endpoint_that_reads_one(tmp_path: Path) -> None:
    """JOSE headers and signed claims of the wrong JSON type, and tokens that are not access
    tokens: the admin API and /authorize answer 401 (a bad subject token 422), revoke 200 — a
    problem with a reason, never a 500."""
    app = create_security_app(service_settings(tmp_path))
    async with app.router.lifespan_context(app):
        ring: KeyRing = app.state.security.ring
        key = ring.active
        now = int(time.time())
        good = {"iss": ISSUER, "aud": "shop", "sub": "root", "exp": now + 60, "iat": now, "jti": "j-1"}
        good["roles"] = ["admin"]

        def signed(header: dict[str, Any], payload: dict[str, Any]) -> str:
            encoded = [b64url_encode(json.dumps(part).encode()) for part in (header, payload)]
            signing_input = ".".join(encoded)
            return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"

        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        tokens = {
            "alg list": signed({**header, "alg": [key.alg]}, good),
            "alg object": signed({**header, "alg": {"a": 1}}, good),
            "kid object": signed({**header, "kid": {"k": key.kid}}, good),
            "typ JWT": signed({**header, "typ": "JWT"}, good),
            "iss list": signed(header, {**good, "iss": [ISSUER]}),
            "iss object": signed(header, {**good, "iss": {"iss": ISSUER}}),
            "aud object": signed(header, {**good, "aud": {"aud": "shop"}}),
            "sub list": signed(header, {**good, "sub": ["root"]}),
            "jti list": signed(header, {**good, "jti": ["j-1"]}),
            "roles object": signed(header, {**good, "roles": {"admin": True}}),
        }
        assert app.state.security.verifier.verify(signed(header, good)).sub == "root"  # the base is good
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://security.test") as client:
            for name, token in tokens.items():
                bearer = {"Authorization": f"Bearer {token}"}
                users = await client.get("/admin/users", headers=bearer)
                assert users.status_code == 401, name
                assert users.headers["content-type"] == "application/problem+json", name
                assert users.json()["reason"] in {"malformed", "wrong_token_type"}, name
                caller = await client.post("/authorize", json={"action": "x"}, headers=bearer)
                assert caller.status_code == 401, name
                root = (await login(client, "root", "root-password")).json()["access_token"]
                subject = await client.post(
                    "/authorize",
                    json={"action": "x", "token": token},
                    headers={"Authorization": f"Bearer {root}"},
                )
                assert subject.status_code == 422, name
                assert subject.json()["reason"] in {"malformed", "wrong_token_type"}, name
                assert (await client.post("/oauth/revoke", data={"token": token})).status_code == 200, name
                assert (await client.post("/oauth/revoke", headers=bearer)).status_code == 200, name
