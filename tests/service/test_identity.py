from __future__ import annotations

import asyncio
import base64
import hmac
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

ISSUER = "https://security.test"
AUDIENCE = "orders"


@dataclass
class Keys:
    ed: ed25519.Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey
    published: list[dict[str, Any]]
    fetches: int = 0
    status: int = 200  # what the JWKS endpoint answers; 503 plays a security service that is down


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
        return JSONResponse({"keys": keys.published}, status_code=keys.status)

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


def verifier(url: str, *, min_refresh_interval: float = 0.0) -> JwksVerifier:
    return JwksVerifier.from_jwks_url(
        url, issuer=ISSUER, audience=AUDIENCE, min_refresh_interval=min_refresh_interval
    )


async def reason_of(v: JwksVerifier, token: str) -> str:
    with pytest.raises(AuthenticationError) as info:
        await v.verify(token)
    return info.value.reason


# The tokens carry no jti: the kit does not require one (revocation needs it only to list a token).
async def test_valid_eddsa_and_es256_tokens_are_accepted(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = verifier(url)
    try:
        assert (await v.verify(token(keys)))["sub"] == "user-1"
        assert (await v.verify(token(keys, alg="ES256", kid="ec-1")))["sub"] == "user-1"
    finally:
        await v.aclose()


async def test_jwks_is_fetched_on_first_use_and_cached(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = verifier(url, min_refresh_interval=10)
    assert keys.fetches == 0  # creating the verifier (and the app) does not need the security service
    try:
        for _ in range(5):
            await v.verify(token(keys))
        assert keys.fetches == 1
    finally:
        await v.aclose()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not_yet_valid"),
        ({"aud": "payments"}, "bad_audience"),
        ({"iss": "https://evil.test"}, "bad_issuer"),
        ({"exp": None}, "missing_exp"),
        ({"sub": None}, "missing_sub"),
    ],
)
async def test_bad_claims_are_rejected(
    jwks: tuple[str, Keys], overrides: dict[str, Any], reason: str
) -> None:
    url, keys = jwks
    v = verifier(url)
    try:
        assert await reason_of(v, token(keys, **overrides)) == reason
    finally:
        await v.aclose()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_alg_none_and_hmac_with_the_public_key_are_rejected(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    header = _b64(json.dumps({"alg": "none", "kid": "ed-1"}).encode())
    body = _b64(json.dumps({"sub": "admin", "iss": ISSUER, "aud": AUDIENCE, "exp": 9999999999}).encode())
    # The classic confusion attack: HS256 keyed with the published public key (PyJWT refuses to
    # sign that, so by hand).
    hs_header = _b64(json.dumps({"alg": "HS256", "kid": "ed-1"}).encode())
    mac = hmac.new(json.dumps(keys.published[0]).encode(), f"{hs_header}.{body}".encode(), "sha256")
    forged = f"{hs_header}.{body}.{_b64(mac.digest())}"
    v = verifier(url)
    try:
        assert await reason_of(v, f"{header}.{body}.") == "malformed"  # no signature segment at all
        assert await reason_of(v, f"{header}.{body}.c2ln") == "alg_not_allowed"
        assert await reason_of(v, forged) == "alg_not_allowed"
    finally:
        await v.aclose()


async def test_unknown_kids_trigger_at_most_one_refetch_per_interval(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = verifier(url, min_refresh_interval=10)
    try:
        await v.verify(token(keys))
        for _ in range(30):  # a burst of made-up kids
            assert await reason_of(v, token(keys, kid="made-up")) == "unknown_kid"
        assert keys.fetches == 2  # the first load and one refetch, not one per token
    finally:
        await v.aclose()


async def test_a_rotated_key_is_picked_up_by_refetching(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    v = verifier(url)
    try:
        await v.verify(token(keys))
        new = ed25519.Ed25519PrivateKey.generate()
        keys.published.append(public_jwk(OKPAlgorithm, new, "ed-2", "EdDSA"))
        rotated = jwt.encode(
            {"sub": "u", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
            new,
            algorithm="EdDSA",
            headers={"kid": "ed-2", "typ": "at+jwt"},
        )
        assert (await v.verify(rotated))["sub"] == "u"
    finally:
        await v.aclose()


async def test_signature_from_another_key_is_rejected(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    other = Keys(ed25519.Ed25519PrivateKey.generate(), keys.ec, [])
    v = verifier(url)
    try:
        assert await reason_of(v, token(other)) == "bad_signature"
    finally:
        await v.aclose()


async def test_unreachable_jwks_is_unavailable_not_unauthenticated() -> None:
    from conftest import dead_port

    v = verifier(f"http://127.0.0.1:{dead_port()}/jwks.json")
    keys = Keys(ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1()), [])
    try:
        with pytest.raises(JwksUnavailableError, match="could not fetch the JWKS"):
            await v.verify(token(keys))
    finally:
        await v.aclose()


def make_app(jwks_url: str, *, trust_gateway_headers: bool = False, issuer: str | None = ISSUER) -> FastAPI:
    settings = ServiceSettings(
        jwks_url=jwks_url,
        token_issuer=issuer,
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
    assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert bad.json()["reason"] == "bad_audience"


async def test_the_service_starts_before_the_security_service_and_answers_503_meanwhile(
    jwks: tuple[str, Keys],
) -> None:
    url, keys = jwks
    keys.status = 503
    auth = {"Authorization": f"Bearer {token(keys)}"}
    async with serve(make_app(url)) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/health/ready")).status_code == 200
        down = await http.get("/me", headers=auth)
        keys.status = 200
        # The first retry is allowed half a second after the failed fetch.
        for _ in range(50):
            up = await http.get("/me", headers=auth)
            if up.status_code != 503:
                break
            await asyncio.sleep(0.05)
    assert down.status_code == 503
    assert "could not fetch the JWKS" in down.json()["detail"]
    assert up.status_code == 200


async def test_issuer_is_not_checked_when_none_is_configured(jwks: tuple[str, Keys]) -> None:
    url, keys = jwks
    async with serve(make_app(url, issuer=None)) as base, httpx.AsyncClient(base_url=base) as http:
        other = await http.get(
            "/me", headers={"Authorization": f"Bearer {token(keys, iss='https://x.test')}"}
        )
        wrong_aud = await http.get("/me", headers={"Authorization": f"Bearer {token(keys, aud='x')}"})
    assert other.status_code == 200
    assert wrong_aud.json()["reason"] == "bad_audience"


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
    assert response.json()["reason"] == "missing"


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
    assert response.json()["reason"] == "subject_mismatch"


async def test_no_credentials_is_401_and_malformed_header_too(jwks: tuple[str, Keys]) -> None:
    url, _ = jwks
    async with serve(make_app(url)) as base, httpx.AsyncClient(base_url=base) as http:
        none = await http.get("/me")
        basic = await http.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    for response in (none, basic):
        assert response.status_code == 401
        assert response.json()["reason"] == "missing"
        # RFC 6750 3.1: no error code when no credentials were sent.
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_verifier_passed_in_is_used_and_its_jwks_refresh_stops_with_the_app(
    jwks: tuple[str, Keys],
) -> None:
    url, keys = jwks
    v = verifier(url)
    app = create_app("orders", settings=ServiceSettings(), verifier=v, configure_logging=False)

    @app.get("/me")
    async def me(caller: Caller) -> dict[str, str]:
        return {"sub": caller.subject}

    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        response = await http.get("/me", headers={"Authorization": f"Bearer {token(keys)}"})
        assert v.jwks is not None
        assert v.jwks.started
    assert response.json() == {"sub": "user-1"}
    assert not v.jwks.started
