"""Mutual TLS from outside: a listener that requires client certificates refuses a client without
one or with one from another CA; the verified certificate reaches the service as
``X-Edgeway-Client-Cert-*`` headers, which a client can never write itself; a route can require
a certificate and name whose; the certificate is the caller's identity when no token is."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from tls_helpers import (
    HttpsClient,
    Pair,
    Pki,
    echo_backend,
    event_loop_policy,  # noqa: F401  (these tests run on uvloop)
    https_get,
    refused_handshake,
    serving,
    tls_config,
    write_config,
)

from edgeway.gateway.process.serve import GatewayServer

SPOOFED = {
    "X-Edgeway-Client-Cert-Subject": "CN=admin,O=Acme",
    "x-edgeway-client-cert-sha256": "00" * 32,
    "X_Edgeway_Client_Cert_SANs": "DNS:admin.example",  # the underscore spelling frameworks accept
    "X-Edgeway-Client-Cert-Issuer": "CN=Partners CA",
}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def subject_of(pair: Pair) -> str:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).subject.rfc4514_string()


async def mtls_gateway(
    tmp_path: Path, pki: Pki, mode: str, routes: Sequence[dict[str, Any]] | None = None, **top: Any
) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port:
        tls = {
            "certificates": [pki.loopback.entry()],
            "client_certificates": {"ca": str(pki.client_ca_file), "mode": mode},
        }
        path = tmp_path / "gw.yaml"
        write_config(path, tls_config(port, tls, routes=routes, **top))
        async with serving(path) as server:
            yield server


@pytest.fixture
async def required(tmp_path: Path, pki: Pki) -> AsyncIterator[GatewayServer]:
    async for server in mtls_gateway(tmp_path, pki, "required"):
        yield server


@pytest.fixture
async def optional(tmp_path: Path, pki: Pki) -> AsyncIterator[GatewayServer]:
    routes: list[dict[str, Any]] = [
        {"match": {"path": "/open/**"}, "proxy": {"service": "echo"}},
        {"match": {"path": "/partners/**"}, "proxy": {"service": "echo"}, "client_cert": {"required": True}},
        {
            "match": {"path": "/acme-a/**"},
            "proxy": {"service": "echo"},
            "client_cert": {"subjects": ["O=Acme, CN=partner-a"]},  # another spelling of its subject
        },
        {
            "match": {"path": "/spiffe/**"},
            "proxy": {"service": "echo"},
            "client_cert": {"names": ["spiffe://acme/partner-a"]},
        },
        {
            "match": {"path": "/limited/**"},
            "proxy": {"service": "echo"},
            "rate_limit": {"rate": 1, "per": "1m", "key": "user"},
        },
    ]
    async for server in mtls_gateway(tmp_path, pki, "optional", routes):
        yield server


async def test_required_refuses_a_client_without_a_certificate(required: GatewayServer, pki: Pki) -> None:
    await refused_handshake(required.port, pki.client_context())


async def test_required_refuses_a_certificate_from_another_ca(required: GatewayServer, pki: Pki) -> None:
    await refused_handshake(required.port, pki.client_context(pki.stranger))


async def test_the_verified_certificate_reaches_the_service_and_spoofs_do_not(
    required: GatewayServer, pki: Pki
) -> None:
    client = await HttpsClient.connect(required.port, pki.client_context(pki.client))
    try:
        first = await client.request("GET", "/x", SPOOFED)
        second = await client.request("GET", "/y")  # the next request on the connection: the same
    finally:
        await client.close()
    assert first.status == second.status == 200
    seen = first.json()["headers"]
    assert seen["x-edgeway-client-cert-subject"] == subject_of(pki.client)
    assert seen["x-edgeway-client-cert-subject"].startswith("O=Acme,CN=partner-a")
    assert seen["x-edgeway-client-cert-sans"] == "DNS:partner-a.example, URI:spiffe://acme/partner-a"
    assert seen["x-edgeway-client-cert-issuer"] == "CN=Partners CA,O=edgeway development"
    fingerprint = x509.load_pem_x509_certificate(pki.client.cert.read_bytes()).fingerprint(hashes.SHA256())
    assert seen["x-edgeway-client-cert-sha256"] == fingerprint.hex()
    assert "x_edgeway_client_cert_sans" not in seen  # the echo lower-cases names; gone, not duplicated
    assert second.json()["headers"]["x-edgeway-client-cert-subject"] == subject_of(pki.client)


async def test_optional_serves_a_client_without_a_certificate_and_strips_spoofs(
    optional: GatewayServer, pki: Pki
) -> None:
    reply, _ = await https_get(optional.port, pki.client_context(), "/open/x", headers=SPOOFED)
    assert reply.status == 200
    assert not [name for name in reply.json()["headers"] if "client-cert" in name or "client_cert" in name]


async def test_optional_still_refuses_a_certificate_from_another_ca(
    optional: GatewayServer, pki: Pki
) -> None:
    await refused_handshake(optional.port, pki.client_context(pki.stranger))


async def test_a_route_can_require_a_certificate(optional: GatewayServer, pki: Pki) -> None:
    without, _ = await https_get(optional.port, pki.client_context(), "/partners/x")
    assert without.status == 403
    assert without.json()["reason"] == "client_cert_missing"
    with_cert, _ = await https_get(optional.port, pki.client_context(pki.client), "/partners/x")
    assert with_cert.status == 200


async def test_a_route_can_name_the_subjects_and_names_it_accepts(optional: GatewayServer, pki: Pki) -> None:
    other = pki.client_cert("partner-b", "partner-b.example", "spiffe://acme/partner-b")
    for path in ("/acme-a/x", "/spiffe/x"):
        allowed, _ = await https_get(optional.port, pki.client_context(pki.client), path)
        assert allowed.status == 200, path
        denied, _ = await https_get(optional.port, pki.client_context(other), path)
        assert denied.status == 403, path
        assert denied.json()["reason"] == "client_cert_denied"
        assert "partner-b" in denied.json()["detail"]


async def test_the_certificate_is_the_identity_rate_limits_key_by(optional: GatewayServer, pki: Pki) -> None:
    other = pki.client_cert("partner-b", "partner-b.example")
    a1, _ = await https_get(optional.port, pki.client_context(pki.client), "/limited/x")
    a2, _ = await https_get(optional.port, pki.client_context(pki.client), "/limited/x")
    b1, _ = await https_get(optional.port, pki.client_context(other), "/limited/x")
    assert (a1.status, a2.status, b1.status) == (200, 429, 200)  # one bucket per certificate


async def test_a_gateway_without_client_certificates_has_no_such_filter(tmp_path: Path, pki: Pki) -> None:
    # And a route asking for one is refused at load (tests/tls/test_tls_config.py); here: the
    # plain HTTPS listener forwards what the client sent untouched, as before (no auth configured).
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        write_config(path, tls_config(port, {"certificates": [pki.loopback.entry()]}))
        async with serving(path) as server:
            assert all(
                type(f).__name__ != "ClientCertFilter"
                for served in server.gateway.pipelines.values()
                for f in served.filters
            )
            reply, _ = await https_get(server.port, pki.client_context(pki.client), "/x")
    assert reply.status == 200
    assert "x-edgeway-client-cert-subject" not in reply.json()["headers"]


async def test_the_access_log_names_the_client_certificate(
    tmp_path: Path, pki: Pki, capfd: pytest.CaptureFixture[str]
) -> None:
    async for server in mtls_gateway(tmp_path, pki, "required", access_log={"enabled": True}):
        reply, _ = await https_get(server.port, pki.client_context(pki.client), "/logged")
        assert reply.status == 200
        server.events.flush()
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"path":"/logged"' in line]
    assert [line.get("client_cert") for line in lines] == [subject_of(pki.client)]


async def test_with_token_auth_the_token_is_the_identity_and_the_certificate_rides_along(
    tmp_path: Path, pki: Pki
) -> None:
    # The auth filter removes every X-Edgeway-* header first; the client certificate's come
    # after it, from the connection, so they reach the service beside the token's identity.
    from edge_helpers import auth_block, issuer_for, jwks_server

    from edgeway.security.keys import KeyRing

    ring = KeyRing.generate()
    token = issuer_for(ring).issue("alice").token
    async with jwks_server(ring) as jwks:
        routes = [{"match": {"path": "/**"}, "proxy": {"service": "echo"}, "auth": {}}]
        async for server in mtls_gateway(tmp_path, pki, "required", routes, auth=auth_block(jwks.url)):
            spoofed = {**SPOOFED, "X-Edgeway-Subject": "mallory", "Authorization": f"Bearer {token}"}
            reply, _ = await https_get(server.port, pki.client_context(pki.client), "/x", headers=spoofed)
            refused, _ = await https_get(server.port, pki.client_context(pki.client), "/x")
    assert reply.status == 200
    seen = reply.json()["headers"]
    assert seen["x-edgeway-subject"] == "alice"
    assert seen["x-edgeway-client-cert-subject"] == subject_of(pki.client)
    assert seen["x-edgeway-client-cert-sha256"] != "00" * 32
    assert refused.status == 401  # a certificate does not stand in for a required token


async def test_the_certificate_headers_reach_aggregate_calls_too(tmp_path: Path, pki: Pki) -> None:
    from edgeway.gateway.tls import peer
    from edgeway.gateway.upstream.service_client import CLIENT_CERT_HEADERS

    # the names forwarded by default are the ones the filter sets
    assert set(CLIENT_CERT_HEADERS) == {
        n.decode() for n in (peer.SUBJECT, peer.ISSUER, peer.SANS, peer.SHA256)
    }
    routes: list[dict[str, Any]] = [
        {"match": {"path": "/screen"}, "aggregate": {"calls": {"echo": {"service": "echo", "path": "/e"}}}}
    ]
    async for server in mtls_gateway(tmp_path, pki, "optional", routes):
        with_cert = await HttpsClient.connect(server.port, pki.client_context(pki.client))
        spoofer = await HttpsClient.connect(server.port, pki.client_context())
        try:
            answered = await with_cert.request("GET", "/screen")
            spoofed = await spoofer.request("GET", "/screen", SPOOFED)
        finally:
            await with_cert.close()
            await spoofer.close()
        assert answered.status == spoofed.status == 200
        seen = answered.json()["headers"]  # the echo's answer, merged into the response
        assert seen["x-edgeway-client-cert-subject"] == subject_of(pki.client)
        assert seen["x-edgeway-client-cert-sans"] == "DNS:partner-a.example, URI:spiffe://acme/partner-a"
        # a client without a certificate cannot pass its own copies on through the call
        assert not [n for n in spoofed.json()["headers"] if "client" in n and "cert" in n]


async def test_the_certificate_headers_reach_python_endpoint_calls_too(tmp_path: Path, pki: Pki) -> None:
    suffix = uuid.uuid4().hex[:8]
    module = f"mtls_endpoint_{suffix}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from edgeway.bff import endpoint

            @endpoint(name="echo_{suffix}")
            async def echoed(req):
                return (await req.services.echo.get("/e")).json()
            """
        )
    )
    routes: list[dict[str, Any]] = [{"match": {"path": "/py"}, "endpoint": {"name": f"echo_{suffix}"}}]
    python = {"modules": [module], "paths": [str(tmp_path)]}
    async for server in mtls_gateway(tmp_path, pki, "optional", routes, python=python):
        with_cert = await HttpsClient.connect(server.port, pki.client_context(pki.client))
        spoofer = await HttpsClient.connect(server.port, pki.client_context())
        try:
            answered = await with_cert.request("GET", "/py")
            spoofed = await spoofer.request("GET", "/py", SPOOFED)
        finally:
            await with_cert.close()
            await spoofer.close()
        assert answered.status == spoofed.status == 200
        assert answered.json()["headers"]["x-edgeway-client-cert-subject"] == subject_of(pki.client)
        assert not [n for n in spoofed.json()["headers"] if "client" in n and "cert" in n]
