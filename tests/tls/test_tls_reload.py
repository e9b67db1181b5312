"""Certificates reload with the config (a reload call, SIGHUP's path, ``POST /reload``, the file
watch) without dropping a connection: new handshakes get the new certificate, an open
keep-alive connection goes on with its own. A certificate that cannot be served (a key of
another certificate, an expired one) is refused with its file named, and the old one keeps
serving; fixing the file, without touching the YAML, brings the next reload."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from tls_helpers import (
    HttpsClient,
    Pair,
    Pki,
    echo_backend,
    event_loop_policy,  # noqa: F401  (these tests run on uvloop)
    expired,
    https_get,
    serving,
    tls_config,
    write_config,
)

from conftest import raw_http
from edgeway.gateway.process.reload import ReloadRefused, request_reload
from edgeway.gateway.process.serve import GatewayServer


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def replace_pair(target: Pair, leaf: trustme.LeafCert) -> None:
    """Renew in place, as certbot or a Kubernetes secret update does: new files renamed over
    the old ones (the key first; a watcher may see the pair mismatched for a moment)."""
    for path, data in (
        (target.key, leaf.private_key_pem.bytes()),
        (target.cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems)),
    ):
        fresh = path.with_suffix(path.suffix + ".new")
        fresh.write_bytes(data)
        os.replace(fresh, path)


def serial_of(client: HttpsClient) -> int:
    der = client.ssl_object.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def file_serial(pair: Pair) -> int:
    return x509.load_pem_x509_certificate(pair.cert.read_bytes()).serial_number


async def served_serial(server: GatewayServer, pki: Pki) -> int:
    client = await HttpsClient.connect(server.port, pki.client_context())
    try:
        return serial_of(client)
    finally:
        await client.close()


def config(port: int, pki: Pki, **top: Any) -> dict[str, Any]:
    return tls_config(port, {"certificates": [pki.loopback.entry()], "hsts": {"max_age": 60}}, **top)


@pytest.fixture
async def gateway(tmp_path: Path, pki: Pki) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        write_config(path, config(port, pki, admin={"host": "127.0.0.1", "port": 0}))
        async with serving(path) as server:
            yield server


async def test_a_reload_swaps_the_certificate_and_an_open_connection_goes_on(
    gateway: GatewayServer, pki: Pki
) -> None:
    before = file_serial(pki.loopback)
    open_client = await HttpsClient.connect(gateway.port, pki.client_context())
    try:
        assert (await open_client.request("GET", "/before")).status == 200
        assert serial_of(open_client) == before
        replace_pair(pki.loopback, pki.ca.issue_cert("localhost", "127.0.0.1", "::1"))
        result = await gateway.reload("signal")  # what SIGHUP runs
        assert result is not None
        assert result.status == "applied", result
        after = file_serial(pki.loopback)
        assert after != before
        assert await served_serial(gateway, pki) == after  # a new handshake: the new certificate
        # The connection opened before the reload is still served, on its own certificate.
        reply = await open_client.request("GET", "/after")
        assert reply.status == 200
        assert reply.json()["line"] == "GET /after HTTP/1.1"
        assert serial_of(open_client) == before
    finally:
        await open_client.close()


async def test_post_reload_on_the_admin_port_swaps_the_certificate(gateway: GatewayServer, pki: Pki) -> None:
    assert gateway.admin_port is not None
    replace_pair(pki.loopback, pki.ca.issue_cert("localhost", "127.0.0.1", "::1"))
    answer = await request_reload("127.0.0.1", gateway.admin_port, token=gateway.admin_token)
    assert answer["status"] == "applied"
    assert await served_serial(gateway, pki) == file_serial(pki.loopback)


async def test_a_key_of_another_certificate_is_refused_and_the_old_one_keeps_serving(
    gateway: GatewayServer, pki: Pki
) -> None:
    assert gateway.admin_port is not None
    serving_now = await served_serial(gateway, pki)
    pki.loopback.key.write_bytes(pki.ca.issue_cert("localhost").private_key_pem.bytes())
    with pytest.raises(ReloadRefused) as refused:
        await request_reload("127.0.0.1", gateway.admin_port, token=gateway.admin_token)
    (issue,) = refused.value.result["issues"]
    assert issue["key"] == "listen.tls.certificates[0].key"
    assert str(pki.loopback.key) in issue["message"]
    assert "does not belong to the certificate" in issue["message"]
    assert issue["line"] is not None  # located in the config file
    assert await served_serial(gateway, pki) == serving_now
    reply, _ = await https_get(gateway.port, pki.client_context())
    assert reply.status == 200


async def test_an_expired_certificate_is_refused_with_its_file_named(
    gateway: GatewayServer, pki: Pki
) -> None:
    serving_now = await served_serial(gateway, pki)
    replace_pair(pki.loopback, expired(pki.ca, "localhost"))
    result = await gateway.reload("api")
    assert result is not None
    assert result.status == "refused"
    (issue,) = result.issues
    assert issue.key_path == "listen.tls.certificates[0].cert"
    assert f"'{pki.loopback.cert}'" in issue.message
    assert "expired on 2020-01-31" in issue.message
    assert await served_serial(gateway, pki) == serving_now


async def test_hsts_reloads_and_a_listener_setting_needs_a_restart(
    tmp_path: Path, gateway: GatewayServer, pki: Pki
) -> None:
    path = tmp_path / "gw.yaml"
    port = gateway.config.services["echo"].instances[0].split(":")[-1]
    changed = config(int(port), pki, admin={"host": "127.0.0.1", "port": 0})
    changed["listen"]["tls"]["hsts"] = {"max_age": 120}
    write_config(path, changed)
    result = await gateway.reload("api")
    assert result is not None
    assert result.status == "applied", result
    reply, _ = await https_get(gateway.port, pki.client_context())
    assert reply.headers["strict-transport-security"] == "max-age=120"
    changed["listen"]["tls"]["min_version"] = "1.3"
    changed["listen"]["tls"]["client_certificates"] = {"ca": str(pki.client_ca_file)}
    write_config(path, changed)
    result = await gateway.reload("api")
    assert result is not None
    assert result.status == "refused"
    assert {issue.key_path for issue in result.issues} == {
        "listen.tls.min_version",
        "listen.tls.client_certificates",
    }


async def test_the_file_watch_follows_the_certificate_files(tmp_path: Path, pki: Pki) -> None:
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        write_config(path, config(port, pki, reload={"watch": True, "interval": "50ms"}))
        async with serving(path) as server:
            assert server.reloader is not None
            first = await served_serial(server, pki)
            # A broken key first: refused, the old certificate stays...
            pki.loopback.key.write_bytes(b"not a key")
            await asyncio.sleep(0.6)
            assert server.reloader.generation == 1
            assert await served_serial(server, pki) == first
            # ... and the fixed pair is picked up, though the YAML never changed.
            replace_pair(pki.loopback, pki.ca.issue_cert("localhost", "127.0.0.1", "::1"))
            renewed = file_serial(pki.loopback)
            async with asyncio.timeout(10):
                while await served_serial(server, pki) != renewed:
                    await asyncio.sleep(0.05)
            assert server.reloader.generation == 2


async def test_the_file_watch_follows_the_services_tls_files(tmp_path: Path) -> None:
    # The YAML never changes; the CA file a service's `tls` names is rotated (here: from a CA
    # that signed nothing to the one that signed the service). The watch reloads on its own and
    # new connections trust the new file.
    from upstream_tls_helpers import make_pki, tls_backend

    upstream = make_pki(tmp_path / "upstream")
    ca_file = tmp_path / "rotating-ca.pem"
    ca_file.write_bytes(upstream.other_ca_file.read_bytes())

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

    get = b"GET /api/x HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n"
    async with tls_backend(answer, upstream.server_context()) as port:
        path = tmp_path / "gw.yaml"
        write_config(
            path,
            {
                "name": "watch-upstream",
                "listen": {"host": "127.0.0.1", "port": 0},
                "reload": {"watch": True, "interval": "50ms"},
                "services": {
                    "backend": {"instances": [f"https://127.0.0.1:{port}"], "tls": {"ca": str(ca_file)}}
                },
                "routes": [{"id": "api", "match": {"path": "/api/**"}, "proxy": {"service": "backend"}}],
            },
        )
        async with serving(path) as server:
            assert server.reloader is not None
            assert (await raw_http(server.port, get)).startswith(b"HTTP/1.1 502")
            ca_file.write_bytes(upstream.ca_file.read_bytes())
            async with asyncio.timeout(10):
                while not (await raw_http(server.port, get)).startswith(b"HTTP/1.1 200"):
                    await asyncio.sleep(0.05)
            assert server.reloader.generation == 2
