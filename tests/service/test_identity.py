from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from fastapi import Depends, FastAPI
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from servers import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from edgeway.service import Caller, Identity, ServiceSettings, create_app, require_roles, require_scopes
from edgeway.service.errors import AuthenticationError, JwksUnavailableError
from edgeway.service.identity import JwksVerifier
from edgeway.service.jwks import JwksCache

ISSUER = "https://security.test"
AUDIENCE = "orders"


@dataclass
class Keys:
    ed: ed25519.Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey
    published: list[dict[str, Any]]
    fetches: int = 0


def public_jwk(algorithm: Any, key: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture
async def jwks() -> AsyncIterator[tuple[str, Keys]]:
    """A real JWKS served over HTTP by a local server, as the security service would."""
    ed = ed25519.Ed25519PrivateKey.generate()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = Keys(
        ed,
        ec_key,
        [public_jwk(OKPAlgorithm, ed, "ed-1", "EdDSA"), public_jwk(ECAlgorithm, ec_key, "ec-1", "ES256")],
    )

    async def document(request: Request) -> JSONResponse:
        keys.fetches += 1
        return JSONResponse({"keys": keys.published})

    app = Starlette(routes=[Route("/.well-known/jwks.json", document)])
    async with serve(app) as url:
        yield f"{url}/.well-known/jwks.json", keys


def token(keys: Keys, *, alg: str = "EdDSA", kid: str = "ed-1", **overrides: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "iat": now,
        "exp": now + 300,
        "scope": "orders:read orders:write",
        "roles": ["customer"],
        **overrides,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    key = keys.ed if alg == "EdDSA" else keys.ec
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"})


def verifier(url: str) -> JwksVerifier:
    return JwksVerifier(JwksCache(url, min_refresh_interval=0.0), issuer=ISSUER, audience=AUDIENCE)


async def test_valid_eddsa_and_es256_tokens_are_accepted(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = verifier(url)
    assert (await v.verify(token(keys)))["sub"] == "user-1"
    assert (await v.verify(token(keys, alg="ES256", kid="ec-1")))["sub"] == "user-1"


async def test_jwks_is_fetched_once_and_cached(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = JwksVerifier(JwksCache(url), issuer=ISSUER, audience=AUDIENCE)
    for _ in range(5):
        await v.verify(token(keys))
    assert keys.fetches == 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "payments"}, "not meant for this service"),
        ({"iss": "https://evil.test"}, "not issued by"),
        ({"exp": None}, "exp"),
    ],
)
async def test_bad_claims_are_rejected(
    jwks: tuple[str, Keys], overrides: dict[str, Any], message: str
) -> None:
    url, keys = jwks
    with pytest.raises(AuthenticationError, match=message):
        await verifier(url).verify(token(keys, **overrides))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_none_is_rejected(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    header = _b64(json.dumps({"alg": "none", "kid": "ed-1"}).encode())
    body = _b64(json.dumps({"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": 9999999999}).encode())
    with pytest.raises(AuthenticationError, match="'none' is not accepted"):
        await verifier(url).verify(f"{header}.{body}.")


async def test_hmac_signed_with_the_public_key_is_rejected(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    forged = jwt.encode({"sub": "admin"}, "x" * 32, algorithm="HS256", headers={"kid": "ed-1"})
    with pytest.raises(AuthenticationError, match="'HS256' is not accepted"):
        await verifier(url).verify(forged)


async def test_unknown_kids_trigger_at_most_one_refetch_per_interval(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    now = [0.0]
    cache = JwksCache(url, min_refresh_interval=10, clock=lambda: now[0])
    v = JwksVerifier(cache, issuer=ISSUER, audience=AUDIENCE)
    await v.verify(token(keys))
    for step in range(30):  # a burst of made-up kids over 15 s
        now[0] = step * 0.5
        with pytest.raises(AuthenticationError, match="unknown key id 'made-up'"):
            await v.verify(token(keys, kid="made-up"))
    assert keys.fetches == 2  # the first load and one refetch at t=10, not one per token


async def test_a_rotated_key_is_picked_up_by_refetching(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = verifier(url)
    await v.verify(token(keys))
    new = ed25519.Ed25519PrivateKey.generate()
    keys.published.append(public_jwk(OKPAlgorithm, new, "ed-2", "EdDSA"))
    rotated = jwt.encode(
        {"sub": "u", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
        new,
        algorithm="EdDSA",
        headers={"kid": "ed-2"},
    )
    assert (await v.verify(rotated))["sub"] == "u"


async def test_signature_from_another_key_is_rejected(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    other = Keys(ed25519.Ed25519PrivateKey.generate(), keys.ec, [])
    with pytest.raises(AuthenticationError, match="Signature verification failed"):
        await verifier(url).verify(token(other))


async def test_unreachable_jwks_is_unavailable_not_unauthenticated() -> None:
    from conftest import free_port

    v = verifier(f"http://127.0.0.1:{free_port()}/jwks.json")
    with pytest.raises(JwksUnavailableError, match="cannot fetch the JWKS"):
        await v.verify(
            token(Keys(ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1()), []))
        )


def make_app(jwks_url: str, *, trust_gateway_headers: bool = False) -> FastAPI:
    settings = ServiceSettings(
        jwks_url=jwks_url,
        token_issuer=ISSUER,
        token_audience=AUDIENCE,
        trust_gateway_headers=trust_gateway_headers,
    )
    app = create_app("orders", settings=settings, configure_logging=False)

    @app.get("/me")
    async def me(caller: Caller) -> dict[str, Any]:
        return {"sub": caller.subject, "roles": sorted(caller.roles), "source": caller.source}

    @app.get("/admin")
    async def admin(caller: Identity = Depends(require_roles("admin"))) -> dict[str, str]:
        return {"sub": caller.subject}

    @app.post("/orders")
    async def write(caller: Identity = Depends(require_scopes("orders:write"))) -> dict[str, str]:
        return {"sub": caller.subject}

    return app


async def test_endpoint_gets_the_verified_caller(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    async with serve(make_app(url)) as base, httpx.AsyncClient(base_url=base) as http:
        ok = await http.get("/me", headers={"Authorization": f"Bearer {token(keys)}"})
        bad = await http.get("/me", headers={"Authorization": f"Bearer {token(keys, aud='x')}"})
    assert ok.json() == {"sub": "user-1", "roles": ["customer"], "source": "token"}
    assert bad.status_code == 401
    assert bad.headers["content-type"] == "application/problem+json"
    assert bad.headers["www-authenticate"].startswith("Bearer")


async def test_roles_and_scopes_guards_answer_403(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    auth = {"Authorization": f"Bearer {token(keys)}"}
    async with serve(make_app(url)) as base, httpx.AsyncClient(base_url=base) as http:
        admin = await http.get("/admin", headers=auth)
        write = await http.post("/orders", headers=auth)
        read_only = await http.post(
            "/orders", headers={"Authorization": f"Bearer {token(keys, scope='orders:read')}"}
        )
    assert admin.status_code == 403
    assert admin.json()["detail"] == "missing role(s): admin"
    assert write.status_code == 200
    assert read_only.status_code == 403


GATEWAY_HEADERS = {"X-Edgeway-Subject": "admin-1", "X-Edgeway-Roles": "admin,customer"}


async def test_forwarded_claims_alone_are_not_trusted_by_default(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    async with serve(make_app(url)) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/admin", headers=GATEWAY_HEADERS)
    assert response.status_code == 401


async def test_forwarded_claims_are_used_when_the_gateway_is_trusted(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    async with (
        serve(make_app(url, trust_gateway_headers=True)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        admin = await http.get("/admin", headers=GATEWAY_HEADERS)
        me = await http.get("/me", headers=GATEWAY_HEADERS)
    assert admin.status_code == 200
    assert me.json() == {"sub": "admin-1", "roles": ["admin", "customer"], "source": "gateway"}


async def test_forwarded_subject_must_match_the_token(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    headers = {**GATEWAY_HEADERS, "Authorization": f"Bearer {token(keys)}"}
    async with (
        serve(make_app(url, trust_gateway_headers=True)) as base,
        httpx.AsyncClient(base_url=base) as http,
    ):
        response = await http.get("/me", headers=headers)
    assert response.status_code == 401
    assert "does not match" in response.json()["detail"]


async def test_no_credentials_is_401_and_malformed_header_too(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    async with serve(make_app(url)) as base, httpx.AsyncClient(base_url=base) as http:
        none = await http.get("/me")
        basic = await http.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert none.status_code == 401
    assert basic.status_code == 401
    assert "Bearer" in basic.json()["detail"]
