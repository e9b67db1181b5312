"""The attack suite at the gateway: a real gateway over sockets, a real backend recording what
reached it, tokens from the real key and token code, the JWKS over real HTTP (and the real
security service where the attack goes through it). Every attack gets the right status and a
problem body, and NOTHING reaches the protected backend."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, cast

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from edge_helpers import (
    AUDIENCE,
    ISSUER,
    auth_block,
    edge_config,
    eventually,
    gateway,
    issuer_for,
    jwks_server,
    problem,
    recording_backend,
    request,
    security_service,
)

from conftest import raw_http
from edgeway.security.keys import KeyRing
from edgeway.security.tokens import encode_jwt


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "j1",
    }
    base.update(over)
    return base


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: str = "") -> str:
    return f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}.{signature}"


def hs256_with_public_key(ring: KeyRing) -> str:
    """The classic key-confusion forgery: HMAC keyed with the (public) verification key."""
    key = ring.active
    public = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = (
        f"{b64(orjson.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid}))}.{b64(orjson.dumps(claims()))}"
    )
    return signing_input + "." + b64(hmac.new(public, signing_input.encode(), hashlib.sha256).digest())


def tamper_payload(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(changes)
    return f"{header}.{b64(orjson.dumps(data))}.{signature}"


def tamper_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[0] ^= 0x01
    return f"{header}.{payload}.{b64(bytes(raw))}"


def forged_tokens(ring: KeyRing) -> dict[str, tuple[str, str]]:
    """name -> (token, the reason the gateway must give)."""
    good = issuer_for(ring)
    other = KeyRing.generate()
    same_kid_other_key = encode_jwt(other.active, claims())
    _header, payload, _signature = same_kid_other_key.split(".")
    kid_header = b64(orjson.dumps({"alg": "EdDSA", "typ": "at+jwt", "kid": ring.active.kid}))
    # A signature by another key under our kid: only the signature can tell.
    impostor = f"{kid_header}.{payload}.{b64(other.active.sign(f'{kid_header}.{payload}'.encode()))}"
    now = int(time.time())
    return {
        "alg_none": (unsigned({"alg": "none", "kid": ring.active.kid}, claims()), "malformed"),
        "alg_none_with_signature": (
            unsigned({"alg": "none", "kid": ring.active.kid}, claims(), "AAAA"),
            "alg_not_allowed",
        ),
        "hs256_with_public_key": (hs256_with_public_key(ring), "alg_not_allowed"),
        "expired": (
            encode_jwt(ring.active, claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200)),
            "expired",
        ),
        "not_yet_valid": (encode_jwt(ring.active, claims(nbf=now + 3600)), "not_yet_valid"),
        "issued_in_the_future": (encode_jwt(ring.active, claims(iat=now + 3600)), "not_yet_valid"),
        "wrong_issuer": (encode_jwt(ring.active, claims(iss="https://evil.test")), "bad_issuer"),
        "wrong_audience": (encode_jwt(ring.active, claims(aud="another-api")), "bad_audience"),
        "unknown_kid": (encode_jwt(other.active, claims()), "unknown_kid"),
        "tampered_payload": (
            tamper_payload(good.issue("alice").token, sub="root", roles=["admin"]),
            "bad_signature",
        ),
        "tampered_signature": (tamper_signature(good.issue("alice").token), "bad_signature"),
        "another_key_set_same_kid": (impostor, "bad_signature"),
        "garbage": ("not-a-token", "malformed"),
        "no_jti": (encode_jwt(ring.active, {k: v for k, v in claims().items() if k != "jti"}), "missing_jti"),
    }


ATTACKS = list(forged_tokens(KeyRing.generate()))


@pytest.mark.parametrize("attack", ATTACKS)
async def test_forged_and_invalid_tokens_are_refused_and_nothing_is_forwarded(attack: str) -> None:
    ring = KeyRing.generate()
    token, reason = forged_tokens(ring)[attack]
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(
            port, [{"match": {"path": "/admin/**"}, "auth": {"roles": ["admin"]}}], auth_block(jwks.url)
        )
        async with gateway(cfg) as (gw, _):
            status, headers, body = await request(
                gw, "GET", "/admin/users", {"authorization": f"Bearer {token}"}
            )
    assert status == 401
    assert headers["content-type"] == ["application/problem+json"]
    challenge = headers["www-authenticate"][0]
    assert challenge.startswith('Bearer realm="edgeway", error="invalid_token", error_description="')
    found = problem(body)
    assert (found["status"], found["reason"]) == (401, reason)
    assert seen.requests == []


async def test_unknown_kids_cannot_turn_into_a_jwks_fetch_storm() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            start = jwks.fetches
            for _ in range(10):
                other = KeyRing.generate()
                token = encode_jwt(other.active, claims())
                assert (await request(gw, "GET", "/x", {"authorization": f"Bearer {token}"}))[0] == 401
            assert jwks.fetches - start <= 1  # one on-demand refresh per min_refresh_interval
    assert seen.requests == []


async def test_a_key_rotated_in_after_start_is_found_by_an_on_demand_refresh() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            ring.rotate(overlap=600)
            token = issuer_for(ring).issue("alice").token
            status, _, _ = await request(gw, "GET", "/x", {"authorization": f"Bearer {token}"})
    assert status == 200
    assert len(seen.requests) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQ="},
        {"authorization": "Bearer "},
        {"X-Edgeway-Subject": "root", "X-Edgeway-Roles": "admin", "X-User-Id": "1"},
    ],
)
async def test_no_token_is_a_401_challenge_without_an_error_code(headers: dict[str, str]) -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/admin/**"}, "auth": {}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            status, got, body = await request(gw, "GET", "/admin/users", headers)
    assert status == 401
    assert got["www-authenticate"] == ['Bearer realm="edgeway"']  # RFC 6750 3.1: no error code
    assert problem(body)["reason"] == "missing"
    assert seen.requests == []


async def test_spoofed_identity_headers_never_reach_the_service() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice", roles=["customer"]).token
    spoofed = {
        "X-Edgeway-Subject": "root",
        "X-EDGEWAY-ROLES": "admin",
        "x-edgeway-claims": b64(b'{"sub":"root"}'),
        "X-User-Id": "0",
    }
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes = [{"match": {"path": "/orders/**"}, "auth": {}}, {"match": {"path": "/public/**"}}]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):
            # Duplicated names too: every copy goes, not only the first.
            dupes = [("X-Edgeway-Subject", "root"), ("X-Edgeway-Subject", "root2")]
            await request(
                gw, "GET", "/orders/1", {"authorization": f"Bearer {token}", **spoofed}, raw_headers=dupes
            )
            await request(gw, "GET", "/public/1", spoofed, raw_headers=dupes)
    with_token, without = seen.requests[0][1], seen.requests[1][1]
    assert with_token[b"x-edgeway-subject"] == b"alice"
    assert with_token[b"x-edgeway-roles"] == b"customer"
    assert b"x-edgeway-claims" not in with_token
    assert b"x-user-id" not in with_token
    # X-Edgeway-Deadline-Ms is the gateway's own (the request's time budget), not an identity.
    spoofable = [name for name in without if name != b"x-edgeway-deadline-ms"]
    assert not [name for name in spoofable if name.startswith((b"x-edgeway-", b"x-user-"))]


async def test_duplicated_spoofed_headers_are_all_removed_on_the_wire() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice").token
    wire: list[bytes] = []

    from edge_helpers import backend

    async def capture(r: Any, w: Any) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        wire.append(head)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await w.drain()
        w.close()

    async with backend(capture) as port, jwks_server(ring) as jwks:
        cfg = edge_config(port, [{"match": {"path": "/**"}, "auth": {}}], auth_block(jwks.url))
        async with gateway(cfg) as (gw, _):
            await request(
                gw,
                "GET",
                "/x",
                {"authorization": f"Bearer {token}"},
                raw_headers=[("X-Edgeway-Subject", "root"), ("x-edgeway-subject", "root2")],
            )
    assert wire[0].lower().count(b"x-edgeway-subject:") == 1
    assert b"x-edgeway-subject: alice" in wire[0].lower()


async def test_a_token_in_the_query_string_is_refused_unless_the_route_allows_it() -> None:
    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice").token
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes: list[dict[str, Any]] = [
            {"match": {"path": "/api/**"}, "auth": {}},
            {"match": {"path": "/events/**"}, "auth": {"allow_query_token": True}},
        ]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):
            refused = await request(gw, "GET", f"/api/orders?access_token={token}")
            allowed = await request(gw, "GET", f"/events/stream?since=5&access_token={token}&x=1")
    assert refused[0] == 401
    assert problem(refused[2])["reason"] == "query_token_refused"
    assert allowed[0] == 200
    line, headers, _ = seen.requests[0]
    assert len(seen.requests) == 1
    assert line == b"GET /events/stream?since=5&x=1 HTTP/1.1"  # the token is not forwarded in the URL
    assert headers[b"authorization"] == f"Bearer {token}".encode()
    assert headers[b"x-edgeway-subject"] == b"alice"


PATH_TRICKS = [
    ("//admin/users", 401),
    ("/public/../admin/users", 401),
    ("/public/%2e%2e/admin/users", 401),
    ("/public/%2E%2E/admin/users", 401),
    ("/public/./../admin/users", 401),
    ("/%61dmin/users", 401),  # %61 is 'a'
    ("/public%2F..%2Fadmin/users", 400),  # encoded slashes are refused by default
    ("/public/..%2Fadmin/users", 400),
    ("/admin%00/users", 400),
    ("/../admin/users", 400),  # above the root
    # Tomcat, Jetty and Spring drop ";params" from a segment before resolving dots, so the
    # service saw /admin/users where the gateway routed /public/..;/admin/users to /public.
    ("/public/..;/admin/users", 400),
    ("/public/..;x=1/admin/users", 400),
    ("/public/.;/../admin/users", 400),
    # A raw backslash is no URI character (RFC 3986); IIS, Windows and some frameworks read it
    # as a separator, turning /public/..\admin into /admin behind the /public route's back.
    ("/public/..\\admin/users", 400),
    ("/ADMIN/users", 404),  # routes are case-sensitive: no route takes it
    ("/Admin/users", 404),
]


@pytest.mark.parametrize(("path", "status"), PATH_TRICKS)
async def test_path_tricks_cannot_bypass_a_protected_route(path: str, status: int) -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes: list[dict[str, Any]] = [
            {"match": {"path": "/admin/**"}, "auth": {"roles": ["admin"]}},
            {"match": {"path": "/public/**"}},
        ]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):
            raw = await raw_http(gw, f"GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d" % status)
    assert b"application/problem+json" in head
    assert problem(body)["status"] == status
    assert seen.requests == []


@pytest.mark.parametrize("path", ["/ADMIN/users", "/Admin/Users", "/aDmIn/users"])
async def test_mixed_case_is_still_protected_when_routing_ignores_case(path: str) -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes = [{"match": {"path": "/admin/**"}, "auth": {}}, {"match": {"path": "/**"}}]
        cfg = edge_config(port, routes, auth_block(jwks.url), paths={"case_sensitive": False})
        async with gateway(cfg) as (gw, _):
            status, _, _ = await request(gw, "GET", path)
    assert status == 401
    assert seen.requests == []


async def test_absolute_form_targets_cannot_route_by_another_host() -> None:
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes: list[dict[str, Any]] = [
            {"match": {"path": "/admin/**"}, "auth": {}},
            {"match": {"path": "/**", "hosts": ["public.test"]}},
        ]
        async with gateway(edge_config(port, routes, auth_block(jwks.url))) as (gw, _):
            raw = await raw_http(
                gw,
                b"GET http://public.test/admin/users HTTP/1.1\r\n"
                b"host: admin.test\r\nconnection: close\r\n\r\n",
            )
    assert raw.startswith(b"HTTP/1.1 400")
    assert seen.requests == []


# --------------------------------------------------------------------------- through the real service


def gateway_in_front_of(service: str, backend_port: int, **auth: Any) -> dict[str, Any]:
    """`/auth/**` → the security service (public), `/api/**` → the backend (token required)."""
    cfg = edge_config(
        backend_port,
        [
            {"match": {"path": "/api/**"}, "auth": {}},
            {"match": {"path": "/auth/**"}, "proxy": {"service": "security", "strip_prefix": "/auth"}},
        ],
        auth_block(f"{service}/.well-known/jwks.json", **auth),
    )
    cfg["services"]["security"] = {"instances": [service]}
    return cfg


async def login(client: httpx.AsyncClient, username: str, password: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "password", "username": username, "password": password, "client_id": "web", **extra}
    return await client.post("/auth/oauth/token", data=form)


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "web"}
    return await client.post("/auth/oauth/token", data=form)


async def test_a_revoked_token_stops_working_within_the_poll_interval(tmp_path: Path) -> None:
    async with recording_backend() as (port, seen), security_service(tmp_path) as service:
        cfg = gateway_in_front_of(
            service, port, revocations={"url": f"{service}/revocations", "interval": "200ms"}
        )
        async with gateway(cfg) as (gw, _), httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as client:
            token = (await login(client, "alice", "alice-password")).json()["access_token"]
            bearer = {"authorization": f"Bearer {token}"}
            assert (await client.get("/api/orders", headers=bearer)).status_code == 200
            revoked = await client.post("/auth/oauth/revoke", data={"token": token})
            assert revoked.status_code == 200
            revoked_at = time.monotonic()

            async def refused() -> bool:
                return (await client.get("/api/orders", headers=bearer)).status_code == 401

            await eventually(refused, timeout=3.0, interval=0.05)
            elapsed = time.monotonic() - revoked_at
            forwarded = len(seen.requests)
            answer = await client.get("/api/orders", headers=bearer)
    assert elapsed < 1.0  # the feed polls every 200 ms
    assert answer.status_code == 401
    assert answer.json()["reason"] == "revoked"
    assert answer.headers["content-type"] == "application/problem+json"
    assert len(seen.requests) == forwarded  # once refused, nothing more reaches the backend


async def test_refresh_token_reuse_through_the_gateway_revokes_the_session(tmp_path: Path) -> None:
    async with recording_backend() as (port, seen), security_service(tmp_path) as service:
        cfg = gateway_in_front_of(
            service, port, revocations={"url": f"{service}/revocations", "interval": "200ms"}
        )
        async with gateway(cfg) as (gw, _), httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as client:
            first = (await login(client, "alice", "alice-password")).json()
            rotated = await refresh(client, first["refresh_token"])
            assert rotated.status_code == 200
            current = rotated.json()
            bearer = {"authorization": f"Bearer {current['access_token']}"}
            assert (await client.get("/api/orders", headers=bearer)).status_code == 200
            before = len(seen.requests)
            # The stolen (already spent) refresh token is replayed.
            reuse = await refresh(client, first["refresh_token"])
            assert reuse.status_code == 400
            assert "reuse detected" in reuse.json()["error_description"]
            # The whole family is gone: the newest refresh token too...
            again = await refresh(client, current["refresh_token"])
            assert again.status_code == 400

            # ...and the access token it produced stops working at the gateway.
            async def refused() -> bool:
                return (await client.get("/api/orders", headers=bearer)).status_code == 401

            await eventually(refused, timeout=3.0)
            forwarded = len(seen.requests)
            final = await client.get("/api/orders", headers=bearer)
    assert final.json()["reason"] == "revoked"
    assert forwarded >= before  # requests racing the 200 ms feed may still have gone through
    assert len(seen.requests) == forwarded


async def test_login_brute_force_through_the_gateway_is_refused_even_with_a_spoofed_address(
    tmp_path: Path,
) -> None:
    async with (
        recording_backend() as (port, seen),
        security_service(
            tmp_path,
            lockout_threshold=4,
            lockout_duration=600,
            throttle_free_attempts=100,
            trust_forwarded_for=True,
        ) as service,
        gateway(gateway_in_front_of(service, port)) as (gw, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as client,
    ):
        answers = []
        for n in range(4):
            # The attacker rotates X-Forwarded-For; the gateway appends the real address and
            # the service keys its IP throttle by that last entry.
            response = await client.post(
                "/auth/oauth/token",
                data={
                    "grant_type": "password",
                    "username": "alice",
                    "password": f"guess-{n}",
                    "client_id": "web",
                },
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )
            answers.append(response.status_code)
        locked = await login(client, "alice", "alice-password")
    assert answers == [400, 400, 400, 400]
    assert locked.status_code == 423
    assert locked.headers["content-type"] == "application/problem+json"
    assert int(locked.headers["retry-after"]) > 500
    assert seen.requests == []


async def test_the_ip_throttle_sees_the_gateways_view_of_the_client(tmp_path: Path) -> None:
    async with (
        recording_backend() as (port, _),
        security_service(
            tmp_path, throttle_free_attempts=2, throttle_base_delay=30.0, trust_forwarded_for=True
        ) as service,
        gateway(gateway_in_front_of(service, port)) as (gw, _),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as client,
    ):
        for n, user in enumerate(("alice", "bob")):
            spoof = {"X-Forwarded-For": f"203.0.113.{n}"}
            form = {"grant_type": "password", "username": user, "password": "wrong", "client_id": "web"}
            assert (await client.post("/auth/oauth/token", data=form, headers=spoof)).status_code == 400
        # Two failures from this address, whatever it claimed: a third account is slowed too.
        sprayed = await client.post(
            "/auth/oauth/token",
            data={"grant_type": "password", "username": "root", "password": "x", "client_id": "web"},
            headers={"X-Forwarded-For": "203.0.113.99"},
        )
    assert sprayed.status_code == 429
    assert "address" in sprayed.json()["detail"]


async def test_chunked_trailers_never_reach_the_service_as_headers() -> None:
    """Trailer fields of a chunked request are not part of the request head: an anonymous client
    cannot deliver identity headers through them on a route that waits (schema validation) after
    the identity scrub. The gateway drops request trailers (docs/gateway.md)."""
    ring = KeyRing.generate()
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        route = {
            "match": {"path": "/orders"},
            "auth": {"mode": "optional"},
            "validate": {"json_schema": {"type": "object"}},
        }
        async with gateway(edge_config(port, [route], auth_block(jwks.url))) as (gw, _):
            r, w = await asyncio.open_connection("127.0.0.1", gw)
            w.write(
                b"POST /orders HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\nTrailer: X-Edgeway-Subject\r\nConnection: close\r\n\r\n"
                b"2\r\n{}\r\n"
            )
            await asyncio.sleep(0.3)  # the scrub has run; validation waits for the end of the body
            w.write(
                b"0\r\nX-Edgeway-Subject: admin\r\nX-Edgeway-Roles: admin\r\n"
                b"X-Request-ID: smuggled\r\nX-Plain: trailer\r\n\r\n"
            )
            out = await asyncio.wait_for(r.read(), 5)
            w.close()
    assert out.startswith(b"HTTP/1.1 200"), out
    _line, headers, body = seen.requests[0]
    assert body == b"{}"
    assert b"x-edgeway-subject" not in headers
    assert b"x-edgeway-roles" not in headers
    assert b"x-plain" not in headers
    assert headers[b"x-request-id"] != b"smuggled"


def malformed_tokens(ring: KeyRing) -> dict[str, tuple[str, str]]:
    """name -> (token, reason): JOSE headers and (validly signed) claims of the wrong JSON type, and
    tokens that are not access tokens (RFC 9068 typ)."""
    kid, alg = ring.active.kid, ring.active.alg

    def signed(header: dict[str, Any], payload: dict[str, Any]) -> str:
        # json, not orjson: orjson refuses to write the 300 levels of the deep_claim case.
        signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
        return f"{signing_input}.{b64(ring.active.sign(signing_input.encode()))}"

    header = {"alg": alg, "typ": "at+jwt", "kid": kid}
    cases: dict[str, tuple[str, str]] = {
        "alg_list": (signed({**header, "alg": [alg]}, claims()), "malformed"),
        "alg_object": (signed({**header, "alg": {"alg": alg}}, claims()), "malformed"),
        "kid_list": (signed({**header, "kid": [kid]}, claims()), "malformed"),
        "typ_object": (signed({**header, "typ": {"t": 1}}, claims()), "malformed"),
        "id_token_typ": (encode_jwt(ring.active, claims(), typ="JWT"), "wrong_token_type"),
        "no_typ": (signed({"alg": alg, "kid": kid}, claims()), "wrong_token_type"),
        "deep_claim": (
            signed(header, claims(deep=functools.reduce(lambda x, _: [x], range(300), cast(Any, [])))),
            "malformed",
        ),
    }
    for name, value in [
        ("iss", [ISSUER]),
        ("iss", {"iss": ISSUER}),
        ("aud", [AUDIENCE, {}]),
        ("aud", {"aud": AUDIENCE}),
        ("sub", ["alice"]),
        ("exp", [1]),
        ("nbf", {}),
        ("iat", "now"),
        ("jti", ["j1"]),
        ("roles", {"admin": True}),
        ("scope", ["orders"]),
        ("client_id", ["web"]),
    ]:
        token = encode_jwt(ring.active, claims(**{name: value}))
        cases[f"{name}_{type(value).__name__}"] = (token, "malformed")
    return cases


async def test_malformed_headers_and_claims_are_401_problems_never_500() -> None:
    ring = KeyRing.generate()
    tokens = malformed_tokens(ring)
    answers: dict[str, tuple[int, object, str]] = {}
    async with recording_backend() as (port, seen), jwks_server(ring) as jwks:
        routes: list[dict[str, Any]] = [
            {"match": {"path": "/admin/**"}, "auth": {"roles": ["admin"]}},
            {"match": {"path": "/maybe/**"}, "auth": {"mode": "optional"}},
        ]
        cfg = edge_config(port, routes, auth_block(jwks.url, headers={"forward_claims": True}))
        async with gateway(cfg) as (gw, _):
            for name, (token, _) in tokens.items():
                for path in ("/admin/users", "/maybe/1"):
                    bearer = {"authorization": f"Bearer {token}"}
                    status, headers, body = await request(gw, "GET", path, bearer)
                    assert headers["content-type"] == ["application/problem+json"], (name, path)
                    answers[f"{name} {path}"] = (status, problem(body).get("reason"), tokens[name][1])
    assert {key: got for key, got in answers.items() if got[:2] != (401, got[2])} == {}
    assert seen.requests == []


# --------------------------------------------------------------------------- TRACE (cross-site tracing)


async def test_trace_is_refused_on_a_catch_all_route_and_never_forwarded() -> None:
    """A service answering TRACE echoes Cookie and Authorization back into a readable body; the
    gateway refuses it before any filter or the service runs, as nginx does. (A lower-case
    ``trace`` is a 400 from the HTTP/1.1 parser; over HTTP/2 see test_h2_attacks_outside.py.)"""
    async with (
        recording_backend() as (port, seen),
        gateway(edge_config(port, [{"match": {"path": "/**"}}])) as (gw, _),
    ):
        raw = await raw_http(
            gw,
            b"TRACE /anything HTTP/1.1\r\nhost: gw.test\r\ncookie: session=secret\r\n"
            b"authorization: Bearer secret\r\nconnection: close\r\n\r\n",
        )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405"), raw
    lowered = head.lower()
    assert b"content-type: application/problem+json" in lowered
    assert b"allow: delete, get, head, options, patch, post, put" in lowered
    assert problem(body)["status"] == 405
    assert b"secret" not in raw
    assert seen.requests == []


async def test_trace_on_a_route_limited_to_other_methods_is_a_405_with_their_allow() -> None:
    async with recording_backend() as (port, seen):
        route = {"match": {"path": "/orders", "methods": ["GET", "POST"]}}
        async with gateway(edge_config(port, [route])) as (gw, _):
            status, headers, body = await request(gw, "TRACE", "/orders")
    assert status == 405
    assert headers["allow"] == ["GET, POST"]
    assert problem(body)["status"] == 405
    assert seen.requests == []


async def test_a_route_listing_trace_forwards_it() -> None:
    async with recording_backend() as (port, seen):
        routes: list[dict[str, Any]] = [
            {"match": {"path": "/debug/**", "methods": ["GET", "TRACE"]}},
            {"match": {"path": "/**"}},
        ]
        async with gateway(edge_config(port, routes)) as (gw, _):
            status, _, _ = await request(gw, "TRACE", "/debug/echo")
            refused, _, _ = await request(gw, "TRACE", "/other")
    assert status == 200
    assert refused == 405
    assert [line for line, _, _ in seen.requests] == [b"TRACE /debug/echo HTTP/1.1"]
