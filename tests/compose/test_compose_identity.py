"""Composition behind the auth filter: a real token checked against a JWKS over HTTP; aggregate
calls and Python endpoint clients carry the verified identity the way the proxy does, never a
client's spoofed copy, and templates read it."""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path

from compose_helpers import Seen, gateway, request, services
from edge_helpers import auth_block, issuer_for, jwks_server

from edgeway.security.keys import KeyRing


async def test_aggregate_calls_carry_the_verified_identity_and_templates_read_it() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue(
        "alice", roles=["customer"], scope=["orders:read"], claims={"tenant": "acme"}
    )

    def orders(seen: Seen) -> object:
        return {"orders": [seen.path]}

    profile = {"profile": lambda s: {"me": s.headers.get("x-edgeway-subject")}}
    async with services(orders=orders, **profile) as svc, jwks_server(ring) as jwks:
        cfg = {
            "auth": auth_block(jwks.url),
            "services": {name: {"instances": [s.url]} for name, s in svc.items()},
            "routes": [
                {
                    "match": {"path": "/home"},
                    "auth": {"roles": ["customer"]},
                    "aggregate": {
                        "calls": {
                            "orders": {
                                "service": "orders",
                                "path": "/users/{identity.subject}/orders",
                                "query": {"tenant": "{identity.claims.tenant}"},
                                "group": "orders",
                            },
                            "profile": {"service": "profile", "path": "/me", "group": "profile"},
                        }
                    },
                }
            ],
        }
        async with gateway(cfg) as (port, _):
            answer = await request(
                port,
                "GET",
                "/home",
                headers={"authorization": f"Bearer {token.token}", "x-edgeway-subject": "mallory"},
            )
            anonymous = await request(port, "GET", "/home")
            seen = svc["orders"].seen[0]
    assert answer.status == 200
    assert answer.json() == {"orders": {"orders": ["/users/alice/orders"]}, "profile": {"me": "alice"}}
    assert seen.query == {"tenant": ["acme"]}
    assert seen.headers["x-edgeway-subject"] == "alice"
    assert seen.headers["x-edgeway-roles"] == "customer"
    assert seen.headers["x-edgeway-scopes"] == "orders:read"
    assert seen.headers["authorization"] == f"Bearer {token.token}"
    assert anonymous.status == 401


async def test_a_python_endpoint_sees_the_identity_and_its_calls_carry_it(tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    module = f"bff_identity_{suffix}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from edgeway.bff import endpoint

            @endpoint(name="whoami_{suffix}")
            async def whoami(req):
                seen = (await req.services.profile.get("/me")).json()
                who = req.identity
                return {{"subject": who.subject, "roles": sorted(who.roles), "service": seen}}
            """
        )
    )
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("bob", roles=["support"])
    profile = {"profile": lambda s: {"subject_header": s.headers.get("x-edgeway-subject")}}
    async with services(**profile) as svc, jwks_server(ring) as jwks:
        cfg = {
            "auth": auth_block(jwks.url, pass_token=False),
            "python": {"modules": [module], "paths": [str(tmp_path)]},
            "services": {"profile": {"instances": [svc["profile"].url]}},
            "routes": [{"match": {"path": "/whoami"}, "auth": {}, "endpoint": {"name": f"whoami_{suffix}"}}],
        }
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/whoami", headers={"authorization": f"Bearer {token.token}"})
            seen = svc["profile"].seen[0]
    assert answer.json() == {"subject": "bob", "roles": ["support"], "service": {"subject_header": "bob"}}
    # pass_token: false strips the token on the way in, so no call can carry it.
    assert "authorization" not in seen.headers
