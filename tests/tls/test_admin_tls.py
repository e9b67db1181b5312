"""HTTPS and mutual TLS on the admin port (``admin.tls``): a client with a certificate from the
configured CA and the token is served; without a certificate, or with one from another CA, the
handshake fails; the token is still required over mTLS; a plaintext admin port is unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tls_helpers import (
    HttpsClient,
    Pki,
    echo_backend,
    event_loop_policy,  # noqa: F401  (these tests run on uvloop)
    https_get,
    refused_handshake,
    serving,
    tls_config,
    write_config,
)

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.gateway.process.serve import GatewayServer


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


async def gateway(tmp_path: Path, pki: Pki, admin_tls: dict[str, Any] | None) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port:
        listen_tls = {"certificates": [pki.loopback.entry()]}
        admin = {"host": "127.0.0.1", "port": 0, "tls": admin_tls}
        path = tmp_path / "gw.yaml"
        write_config(path, tls_config(port, listen_tls, admin=admin))
        async with serving(path) as server:
            yield server


@pytest.fixture
async def mtls_admin(tmp_path: Path, pki: Pki) -> AsyncIterator[GatewayServer]:
    admin_tls = {
        "certificates": [pki.loopback.entry()],
        "client_certificates": {"ca": str(pki.client_ca_file), "mode": "required"},
    }
    async for server in gateway(tmp_path, pki, admin_tls):
        yield server


def bearer(server: GatewayServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_token}"}


async def test_a_client_certificate_from_the_ca_and_the_token_are_served(
    mtls_admin: GatewayServer, pki: Pki
) -> None:
    assert mtls_admin.admin_port is not None
    reply, served = await https_get(
        mtls_admin.admin_port, pki.client_context(pki.client), "/routes", headers=bearer(mtls_admin)
    )
    assert reply.status == 200
    assert "routes" in reply.json()
    assert "localhost" in served  # the admin port presents admin.tls's certificate


async def test_mtls_does_not_replace_the_token(mtls_admin: GatewayServer, pki: Pki) -> None:
    assert mtls_admin.admin_port is not None
    reply, _ = await https_get(mtls_admin.admin_port, pki.client_context(pki.client), "/routes")
    assert reply.status == 401
    probe, _ = await https_get(mtls_admin.admin_port, pki.client_context(pki.client), "/healthz")
    assert probe.status == 200


async def test_a_client_without_a_certificate_is_refused(mtls_admin: GatewayServer, pki: Pki) -> None:
    assert mtls_admin.admin_port is not None
    await refused_handshake(mtls_admin.admin_port, pki.client_context())


async def test_a_certificate_from_another_ca_is_refused(mtls_admin: GatewayServer, pki: Pki) -> None:
    assert mtls_admin.admin_port is not None
    await refused_handshake(mtls_admin.admin_port, pki.client_context(pki.stranger))


async def test_https_admin_without_client_certificates(tmp_path: Path, pki: Pki) -> None:
    async for server in gateway(tmp_path, pki, {"certificates": [pki.loopback.entry()]}):
        assert server.admin_port is not None
        reply, _ = await https_get(server.admin_port, pki.client_context(), "/routes", headers=bearer(server))
        assert reply.status == 200
        # Plain HTTP on an HTTPS admin port gets no answer from the admin API.
        r, w = await asyncio.open_connection("127.0.0.1", server.admin_port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(r.read(), 10)
        w.close()
        assert b'"status":"ok"' not in answer.replace(b" ", b"")


async def test_a_plaintext_admin_port_is_unchanged(tmp_path: Path, pki: Pki) -> None:
    async for server in gateway(tmp_path, pki, None):
        assert server.admin_port is not None
        r, w = await asyncio.open_connection("127.0.0.1", server.admin_port)
        w.write(
            f"GET /routes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.admin_token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(r.read(), 10)
        w.close()
        assert answer.startswith(b"HTTP/1.1 200")
        # The traffic port is HTTPS all the same.
        client = await HttpsClient.connect(server.port, pki.client_context())
        try:
            assert (await client.request("GET", "/x")).status == 200
        finally:
            await client.close()


def test_hsts_on_the_admin_port_is_refused(pki: Pki) -> None:
    config = tls_config(
        1,
        {"certificates": [pki.loopback.entry()]},
        admin={"port": 0, "tls": {"certificates": [pki.loopback.entry()], "hsts": {"max_age": "5m"}}},
    )
    with pytest.raises(ConfigError, match="HSTS"):
        validate_config(config)
