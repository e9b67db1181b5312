"""The auth filter over real sockets: modes, identity headers, roles/scopes/claims, ABAC, the
verified-token cache and the header contract with the service kit."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from edge_helpers import (
    AUDIENCE,
    ISSUER,
    auth_block,
    edge_config,
    gateway,
    issuer_for,
    jwks_server,
    problem,
    recording_backend,
    request,
)

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.security.errors import JwksUnavailable
from edgeway.security.keys import KeyRing
from edgeway.service.identity import identity_from_headers


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_required_route_forwards_the_verified_identity_and_strips_spoofed_headers() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue(
        "alice", roles=["customer", "support"], scope=["orders:read", "profile"], claims={"client_id": "web"}
    )
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/orders/**"}, "auth": {}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            status, _, _ = await request(
                gw,
                "GET",
                "/orders/1",
                {
                    **bearer(token.token),
                    "X-Edgeway-Subject": "root",
                    "x-edgeway-roles": "admin",
                    "X-User-Id": "1",
                    "X-Keep": "yes",
                },
            )
    assert status == 200
    headers = seen.last_headers()
    assert headers[b"x-edgeway-subject"] == b"alice"
    assert headers[b"x-edgeway-roles"] == b"customer,support"
    assert headers[b"x-edgeway-scopes"] == b"orders:read profile"
    assert headers[b"x-edgeway-client"] == b"web"
    assert headers[b"authorization"] == f"Bearer {token.token}".encode()
    assert b"x-user-id" not in headers
    assert b"x-edgeway-claims" not in headers  # opt-in
    assert headers[b"x-keep"] == b"yes"
    # The service kit reads exactly these headers.
    identity = identity_from_headers({k.decode(): v.decode() for k, v in headers.items()})
    assert identity is not None
    assert (identity.subject, identity.roles, identity.scopes) == (
        "alice",
        {"customer", "support"},
        {"orders:read", "profile"},
    )


async def test_forwarded_claims_header_is_base64url_json_the_service_kit_decodes() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice", roles=["customer"], claims={"region": "eu"})
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        auth = auth_block(jwks.url, headers={"forward_claims": True}, pass_token=False)
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth)
        async with gateway(cfg) as (gw, _):
            status, _, _ = await request(gw, "GET", "/me", bearer(token.token))
    assert status == 200
    headers = seen.last_headers()
    assert b"authorization" not in headers  # pass_token: false
    encoded = headers[b"x-edgeway-claims"].decode()
    claims = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert claims["region"] == "eu"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    identity = identity_from_headers({k.decode(): v.decode() for k, v in headers.items()})
    assert identity is not None
    assert identity.claims["region"] == "eu"


async def test_identity_headers_are_stripped_on_routes_without_auth_too() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes = [
            {"match": {"path": "/public/**"}},
            {"match": {"path": "/none/**"}, "auth": {"mode": "none"}},
        ]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):
            for path in ("/public/x", "/none/x"):
                status, _, _ = await request(
                    gw, "GET", path, {"X-Edgeway-Subject": "root", "X-USER-ROLE": "admin", "X-Other": "1"}
                )
                assert status == 200
                headers = seen.last_headers()
                assert b"x-edgeway-subject" not in headers
                assert b"x-user-role" not in headers
                assert headers[b"x-other"] == b"1"


async def test_configured_extra_names_and_prefixes_are_stripped() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        auth = auth_block(
            jwks.url,
            headers={"subject": "X-Caller"},
            strip_headers=["X-Tenant"],
            strip_header_prefixes=["X-Internal-"],
        )
        async with gateway(edge_config(port, [{"match": {"path": "/**"}}], auth)) as (gw, _):
            await request(
                gw, "GET", "/x", {"X-Caller": "root", "x-tenant": "t1", "X-Internal-Flag": "1", "X-Ok": "1"}
            )
    headers = seen.last_headers()
    assert not {b"x-caller", b"x-tenant", b"x-internal-flag"} & set(headers)
    assert headers[b"x-ok"] == b"1"


async def test_optional_mode_passes_anonymous_requests_but_refuses_bad_tokens() -> None:
    ring = KeyRing.generate()
    good = issuer_for(ring).issue("alice").token
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(
            port, [{"match": {"path": "/**"}, "auth": {"mode": "optional"}}], auth_block(jwks.url)
        )
        async with gateway(cfg) as (gw, _):
            anonymous = await request(gw, "GET", "/feed", {"X-Edgeway-Subject": "root"})
            known = await request(gw, "GET", "/feed", bearer(good))
            bad = await request(gw, "GET", "/feed", bearer(good[:-4] + "AAAA"))
    assert anonymous[0] == 200
    assert known[0] == 200
    assert bad[0] == 401
    assert b"x-edgeway-subject" not in seen.requests[0][1]
    assert seen.requests[1][1][b"x-edgeway-subject"] == b"alice"
    assert len(seen.requests) == 2


async def test_gateway_default_mode_protects_routes_without_an_auth_block() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes = [
            {"match": {"path": "/private/**"}},
            {"match": {"path": "/health"}, "auth": {"mode": "none"}},
        ]
        cfg = edge_config(port, routes, auth_block(jwks.url, default_mode="required"))
        async with gateway(cfg) as (gw, _):
            private = await request(gw, "GET", "/private/x")
            health = await request(gw, "GET", "/health")
    assert (private[0], health[0]) == (401, 200)
    assert seen.lines == [b"GET /health HTTP/1.1"]


@pytest.mark.parametrize(
    ("rule", "token_options", "status", "reason"),
    [
        ({"roles": ["admin", "support"]}, {"roles": ["support"]}, 200, None),
        ({"roles": ["admin"]}, {"roles": ["customer"]}, 403, "insufficient_role"),
        ({"roles": {"all": ["a", "b"]}}, {"roles": ["a"]}, 403, "insufficient_role"),
        ({"roles": {"all": ["a", "b"]}}, {"roles": ["b", "a", "c"]}, 200, None),
        ({"scopes": {"any": ["orders:write"]}}, {"scope": ["orders:read"]}, 403, "insufficient_scope"),
        ({"scopes": ["orders:read"]}, {"scope": ["orders:read"]}, 200, None),
        ({"claims": [{"claim": "region", "equals": "eu"}]}, {"claims": {"region": "eu"}}, 200, None),
        (
            {"claims": [{"claim": "region", "equals": "eu"}]},
            {"claims": {"region": "us"}},
            403,
            "claim_mismatch",
        ),
        ({"claims": [{"claim": "tier", "in": ["gold", "silver"]}]}, {"claims": {"tier": "gold"}}, 200, None),
        ({"claims": [{"claim": "org.id", "equals": 7}]}, {"claims": {"org": {"id": 7}}}, 200, None),
        (
            {"claims": [{"claim": "org.id", "equals": 1}]},
            {"claims": {"org": {"id": True}}},
            403,
            "claim_mismatch",
        ),
        ({"claims": [{"claim": "verified", "exists": True}]}, {}, 403, "claim_mismatch"),
        ({"claims": [{"claim": "banned", "exists": False}]}, {}, 200, None),
    ],
)
async def test_roles_scopes_and_claim_conditions(
    rule: dict[str, Any], token_options: dict[str, Any], status: int, reason: str | None
) -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice", **token_options).token
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": rule}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            got, headers, body = await request(gw, "GET", "/x", bearer(token))
    assert got == status
    if reason is None:
        assert len(seen.requests) == 1
        return
    assert seen.requests == []
    assert headers["content-type"] == ["application/problem+json"]
    assert problem(body)["reason"] == reason
    if reason == "insufficient_scope":
        assert 'error="insufficient_scope"' in headers["www-authenticate"][0]


async def test_abac_policy_decides_with_path_parameters_as_the_resource(tmp_path: Any) -> None:
    ring = KeyRing.generate()
    issuer = issuer_for(ring)
    policies = {
        "version": 1,
        "policies": [
            {"id": "owner", "actions": ["orders:read"], "when": {"eq": ["resource.owner", "subject.sub"]}},
            {
                "id": "region",
                "actions": ["orders:read"],
                "roles": ["support"],
                "when": {"eq": ["subject.region", {"value": "eu"}]},
            },
        ],
    }
    from edge_helpers import backend, read_request  # the policy endpoint is a raw server here

    async def policy_endpoint(r: Any, w: Any) -> None:
        await read_request(r)
        body = orjson.dumps(policies)
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
            % (len(body), body)
        )
        await w.drain()
        w.close()

    route = {
        "match": {"path": "/users/{user}/orders/{id}"},
        "auth": {
            "policy": {
                "action": "orders:read",
                "resource": {"type": "order", "id": "{id}", "owner": "{user}"},
            }
        },
    }
    async with (
        recording_backend() as (port, seen),
        jwks_server(ring) as jwks,
        backend(policy_endpoint) as pport,
    ):
        auth = auth_block(jwks.url, policy_url=f"http://127.0.0.1:{pport}/policies")
        async with gateway(edge_config(port, [route], auth)) as (gw, _):
            own = await request(gw, "GET", "/users/alice/orders/7", bearer(issuer.issue("alice").token))
            other = await request(gw, "GET", "/users/bob/orders/7", bearer(issuer.issue("alice").token))
            support = await request(
                gw,
                "GET",
                "/users/bob/orders/7",
                bearer(issuer.issue("sam", roles=["support"], claims={"region": "eu"}).token),
            )
    assert (own[0], other[0], support[0]) == (200, 403, 200)
    assert problem(other[2])["reason"] == "policy_denied"
    assert seen.lines == [b"GET /users/alice/orders/7 HTTP/1.1", b"GET /users/bob/orders/7 HTTP/1.1"]


async def test_a_repeated_token_is_verified_once() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice").token
    async with recording_backend() as (port, _), jwks_server(ring) as jwks:
        from edgeway.gateway.core.access_log import AccessLog
        from edgeway.gateway.core.runtime import Gateway
        from edgeway.gateway.filters.auth.tokens import EdgeAuth

        gw = Gateway(
            validate_config(
                edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth_block(jwks.url))
            ),
            AccessLog("t", __import__("io").BytesIO()),
        )
        auth = gw.env.components["auth"]
        assert isinstance(auth, EdgeAuth)
        await gw.start()
        try:
            first = auth.verify(token.encode())
            for _ in range(5):
                assert auth.verify(token.encode()) is first
            assert (auth.verifier.cache_misses, auth.verifier.cache_hits) == (1, 5)
        finally:
            await gw.stop()


async def test_the_gateway_does_not_start_without_keys() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, _), jwks_server(ring) as jwks:
        jwks.available = False
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth_block(jwks.url))
        with pytest.raises(JwksUnavailable):
            async with gateway(cfg):
                pass


@pytest.mark.parametrize(
    ("cfg_auth", "route_auth", "message"),
    [
        (None, {}, "routes[0].auth: a route with 'auth' needs the top-level 'auth'"),
        ({"algorithms": ["HS256"]}, {}, "algorithm 'HS256' is not allowed"),
        ({"algorithms": ["none"]}, {}, "algorithm 'none' is not allowed"),
        ({}, {"mode": "optional", "roles": ["a"]}, "need mode 'required'"),
        ({}, {"policy": {"action": "orders:read"}}, "needs 'auth.policy_url'"),
        (
            {"policy_url": "http://s/policies"},
            {"policy": {"action": "orders:{verb}"}},
            "'{verb}' is not a parameter of path '/orders/{id}'",
        ),
        ({}, {"roles": {"any": ["a"], "all": ["b"]}}, "exactly one of 'any' or 'all'"),
        (
            {},
            {"claims": [{"claim": "a", "equals": 1, "exists": True}]},
            "exactly one of 'equals', 'in' or 'exists'",
        ),
        (
            {"revocations_url": "http://s/revocations"},
            {},
            "auth.revocations_url: moved: write 'revocations: {url: ...}' instead",
        ),
        (
            {"revocations_interval": "2s"},
            {},
            "auth.revocations_interval: moved: write 'revocations: {interval: ...}' instead",
        ),
        ({"revocations": {"interval": "2s"}}, {}, "auth.revocations.url: required key 'url' is missing"),
        (
            {"revocations": {"url": "http://s/revocations", "bus": {"url": "redis://b:6379"}}},
            {},
            "auth.revocations.bus.url: invalid broker URL redis://b:6379: use nats://host:4222",
        ),
        (
            {"revocations": {"url": "http://s/revocations", "bus": {"url": "nats://b", "prefix": "Ew"}}},
            {},
            "auth.revocations.bus.prefix",
        ),
    ],
)
def test_config_mistakes_are_reported_with_their_key(
    cfg_auth: dict[str, Any] | None, route_auth: dict[str, Any], message: str
) -> None:
    auth = None if cfg_auth is None else auth_block("http://security/jwks", **cfg_auth)
    cfg = edge_config(1, [{"match": {"path": "/orders/{id}"}, "auth": route_auth}], auth)
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    assert message in str(caught.value)


def test_the_verified_token_cache_ttl_forces_a_second_signature_check() -> None:
    from edgeway.security.verify import KeySet, TokenVerifier

    now = [1_700_000_000.0]
    ring = KeyRing.generate()
    token = issuer_for(ring, clock=lambda: now[0]).issue("alice", ttl=3600).token
    verifier = TokenVerifier(
        KeySet.from_jwks(ring.jwks()), issuer=ISSUER, audience=AUDIENCE, cache_ttl=60, clock=lambda: now[0]
    )
    verifier.verify(token)
    now[0] += 59
    verifier.verify(token)
    assert (verifier.cache_misses, verifier.cache_hits) == (1, 1)
    now[0] += 2  # past the TTL: verified again, then cached again
    verifier.verify(token)
    verifier.verify(token)
    assert (verifier.cache_misses, verifier.cache_hits) == (2, 2)
