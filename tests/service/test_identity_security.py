"""A ``create_app`` service against the real security service (the Direct pattern): revocations
reach the kit's verifier, and malformed tokens are 401 problems there as everywhere."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from servers import serve

from edgeway.security.keys import KeyRing, b64url_encode
from edgeway.security_service import SecuritySettings, create_security_app
from edgeway.service import Caller, ServiceSettings, create_app

ISSUER = "https://security.test"
AUDIENCE = "orders"
SEED = """
scopes: [orders]
roles:
  customer: ["orders:create"]
users:
  - {username: alice, password: "alice-password", roles: [customer]}
clients:
  - {client_id: web, public: true, grant_types: [password, refresh_token], scopes: [orders]}
"""


@asynccontextmanager
async def security(tmp_path: Path) -> AsyncIterator[tuple[str, FastAPI]]:
    seed = tmp_path / "seed.yaml"
    seed.write_text(SEED)
    settings = SecuritySettings(
        issuer=ISSUER,
        audience=[AUDIENCE],
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'security.db'}",
        keys_path=tmp_path / "keys.json",
        seed_file=seed,
        argon2_time_cost=1,
        argon2_memory_cost=8,
        argon2_parallelism=1,
        throttle_base_delay=0.0,
    )
    app = create_security_app(settings)
    async with serve(app) as url:
        yield url, app


def service(security_url: str, **settings: Any) -> FastAPI:
    app = create_app(
        "orders",
        settings=ServiceSettings(
            jwks_url=f"{security_url}/.well-known/jwks.json",
            token_issuer=ISSUER,
            token_audience=AUDIENCE,
            **settings,
        ),
        configure_logging=False,
    )

    @app.get("/me")
    async def me(caller: Caller) -> dict[str, Any]:
        return {"sub": caller.subject}

    return app


async def login(http: httpx.AsyncClient, security_url: str) -> dict[str, Any]:
    form = {"grant_type": "password", "username": "alice", "password": "alice-password", "client_id": "web"}
    response = await http.post(f"{security_url}/oauth/token", data=form)
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def test_a_token_revoked_at_logout_is_refused_by_a_create_app_service(tmp_path: Path) -> None:
    async with (
        security(tmp_path) as (security_url, _),
        serve(service(security_url, revocation_poll_interval=0.2)) as base,
        httpx.AsyncClient() as http,
    ):
        tokens = await login(http, security_url)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await http.get(f"{base}/me", headers=bearer)).status_code == 200
        logout = await http.post(f"{security_url}/oauth/revoke", headers=bearer)
        assert logout.status_code == 200
        deadline = time.monotonic() + 5.0
        while (refused := await http.get(f"{base}/me", headers=bearer)).status_code == 200:
            assert time.monotonic() < deadline, "the revoked token still works at the service"
            await asyncio.sleep(0.05)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "revoked"


async def test_a_token_revoked_before_the_services_first_request_is_refused_at_once(tmp_path: Path) -> None:
    # The first token waits for one poll of the feed, as it waits for the key set.
    async with security(tmp_path) as (security_url, _), httpx.AsyncClient() as http:
        tokens = await login(http, security_url)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await http.post(f"{security_url}/oauth/revoke", headers=bearer)).status_code == 200
        async with serve(service(security_url, revocation_poll_interval=60)) as base:
            refused = await http.get(f"{base}/me", headers=bearer)
    assert (refused.status_code, refused.json()["reason"]) == (401, "revoked")


async def test_a_token_revoked_at_logout_is_refused_by_the_legacy_monolith(tmp_path: Path) -> None:
    # The shop's monolith is not a create_app service but verifies tokens too, and a client can
    # call it past the edges: revocation reaches it as well.
    from edgeway.demo.shop.common.settings import ShopSettings
    from edgeway.demo.shop.legacy.app import create_app as legacy_app

    async with security(tmp_path) as (security_url, _), httpx.AsyncClient() as http:
        settings = ShopSettings(
            jwks_url=f"{security_url}/.well-known/jwks.json",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'legacy.db'}",
            data_dir=tmp_path,
            token_issuer=ISSUER,
            token_audience=AUDIENCE,
            revocation_poll_interval=0.2,
        )
        async with serve(legacy_app(settings)) as base:
            tokens = await login(http, security_url)
            bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
            served = await http.get(f"{base}/account/orders", headers=bearer)
            assert (served.status_code, served.json()["username"]) == (200, "alice")
            assert (await http.post(f"{security_url}/oauth/revoke", headers=bearer)).status_code == 200
            deadline = time.monotonic() + 5.0
            while (refused := await http.get(f"{base}/account/orders", headers=bearer)).status_code == 200:
                assert time.monotonic() < deadline, "the revoked token still works at the monolith"
                await asyncio.sleep(0.05)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


async def test_revocation_checks_can_be_turned_off(tmp_path: Path) -> None:
    async with security(tmp_path) as (security_url, _), httpx.AsyncClient() as http:
        tokens = await login(http, security_url)
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        assert (await http.post(f"{security_url}/oauth/revoke", headers=bearer)).status_code == 200
        async with serve(service(security_url, revocations_url="")) as base:
            assert (await http.get(f"{base}/me", headers=bearer)).status_code == 200


def test_the_feed_is_found_next_to_the_jwks_or_set_explicitly() -> None:
    derived = ServiceSettings(jwks_url="http://security:8000/.well-known/jwks.json")
    assert derived.revocation_feed() == "http://security:8000/revocations"
    other = ServiceSettings(jwks_url="https://idp.example/protocol/openid-connect/certs")
    assert other.revocation_feed() is None
    explicit = ServiceSettings(jwks_url="https://idp.example/certs", revocations_url="http://s/revocations")
    assert explicit.revocation_feed() == "http://s/revocations"
    assert ServiceSettings(jwks_url=derived.jwks_url, revocations_url="").revocation_feed() is None


async def test_malformed_tokens_are_401_problems_at_a_create_app_service(tmp_path: Path) -> None:
    async with (
        security(tmp_path) as (security_url, security_app),
        serve(service(security_url)) as base,
        httpx.AsyncClient() as http,
    ):
        ring: KeyRing = security_app.state.security.ring
        key = ring.active
        now = int(time.time())
        good = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 60, "iat": now, "jti": "j"}

        def signed(header: dict[str, Any], payload: dict[str, Any]) -> str:
            encoded = [b64url_encode(json.dumps(part).encode()) for part in (header, payload)]
            signing_input = ".".join(encoded)
            return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}"

        header = {"alg": key.alg, "typ": "at+jwt", "kid": key.kid}
        base_token = {"Authorization": f"Bearer {signed(header, good)}"}
        assert (await http.get(f"{base}/me", headers=base_token)).status_code == 200
        tokens = {
            "alg list": (signed({**header, "alg": [key.alg]}, good), "malformed"),
            "alg object": (signed({**header, "alg": {"a": 1}}, good), "malformed"),
            "typ JWT": (signed({**header, "typ": "JWT"}, good), "wrong_token_type"),
            "iss list": (signed(header, {**good, "iss": [ISSUER]}), "malformed"),
            "iss object": (signed(header, {**good, "iss": {"i": ISSUER}}), "malformed"),
            "sub object": (signed(header, {**good, "sub": {"s": "alice"}}), "malformed"),
            "roles string": (signed(header, {**good, "roles": "admin"}), "malformed"),
        }
        answers = {}
        for name, (token, _) in tokens.items():
            response = await http.get(f"{base}/me", headers={"Authorization": f"Bearer {token}"})
            answers[name] = (
                response.status_code,
                response.headers["content-type"],
                response.json().get("reason"),
            )
    expected = {name: (401, "application/problem+json", reason) for name, (_, reason) in tokens.items()}
    assert answers == expected
