"""The local CA (``edgeway tls``): certificates for loopback that a gateway serves and clients
trust without a public CA, for servers and for mTLS clients; a CA that cannot vouch for real
sites (name constraints, enforced by the clients' own verification)."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from tls_helpers import (
    HttpsClient,
    Pair,
    echo_backend,
    event_loop_policy,  # noqa: F401  (these tests run on uvloop)
    refused_handshake,
    serving,
    write_config,
)
from typer.testing import CliRunner

from edgeway.cli import build_app
from edgeway.pki.local_ca import LocalCA, LocalCAError


def run(*args: str) -> str:
    result = CliRunner().invoke(build_app("tls"), ["tls", *args])
    assert result.exit_code == 0, result.output
    return result.output


def client_for(directory: Path, *, cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(directory / "ca.pem"))
    if cert:
        ctx.load_cert_chain(directory / "client.pem", directory / "client.key")
    return ctx


async def test_dev_certs_serve_https_with_mtls_on_loopback(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    output = run("dev-certs", str(certs))
    assert "CA (made)" in output
    for key in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600, key
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        tls = {
            "certificates": [{"cert": str(certs / "server.pem"), "key": str(certs / "server.key")}],
            "client_certificates": {"ca": str(certs / "ca.pem")},
        }
        write_config(
            path,
            {
                "listen": {"host": "127.0.0.1", "port": 0, "tls": tls},
                "admin": None,
                "access_log": {"enabled": False},
                "services": {"echo": {"instances": [f"http://127.0.0.1:{port}"]}},
                "routes": [{"match": {"path": "/**"}, "proxy": {"service": "echo"}}],
            },
        )
        async with serving(path) as server:
            for name in ("localhost", "127.0.0.1", "::1"):
                client = await HttpsClient.connect(server.port, client_for(certs), name)
                try:
                    reply = await client.request("GET", "/", host=name if ":" not in name else f"[{name}]")
                finally:
                    await client.close()
                assert reply.status == 200, name
                assert reply.json()["headers"]["x-edgeway-client-cert-subject"] == "CN=developer"
            await refused_handshake(server.port, client_for(certs, cert=False))  # mTLS: required


def test_dev_certs_keep_the_ca_browsers_already_trust(tmp_path: Path) -> None:
    run("dev-certs", str(tmp_path))
    first = (tmp_path / "ca.pem").read_bytes()
    assert "CA (kept)" in run("dev-certs", str(tmp_path))
    assert (tmp_path / "ca.pem").read_bytes() == first
    issued = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    issued.verify_directly_issued_by(x509.load_pem_x509_certificate(first))


def test_cert_issues_server_and_client_certificates(tmp_path: Path) -> None:
    run("ca", str(tmp_path))
    run("cert", str(tmp_path), "api.localhost", "127.0.0.2", "--out", "api")
    run("cert", str(tmp_path), "orders", "spiffe://shop/orders", "--client", "--out", "orders")
    api = x509.load_pem_x509_certificate((tmp_path / "api.pem").read_bytes())
    names = api.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.2"]
    orders = x509.load_pem_x509_certificate((tmp_path / "orders.pem").read_bytes())
    assert orders.subject.rfc4514_string() == "CN=orders"
    uris = orders.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://shop/orders"]
    usage = orders.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [oid.dotted_string for oid in usage] == ["1.3.6.1.5.5.7.3.2"]  # clientAuth only


def test_the_local_ca_refuses_names_beyond_loopback(tmp_path: Path) -> None:
    ca, _ = LocalCA.in_directory(tmp_path)
    for name in ("example.com", "10.0.0.1", "localhost.example.com"):
        with pytest.raises(LocalCAError, match="only vouches for"):
            ca.issue([name])
    result = CliRunner().invoke(build_app("tls"), ["tls", "cert", str(tmp_path), "www.example.com"])
    assert result.exit_code == 2
    assert "--any-name" in result.output
    other = tmp_path / "any"
    run("ca", str(other), "--any-name")
    LocalCA.in_directory(other)[0].issue(["www.example.com"])


async def test_a_forged_certificate_beyond_the_constraints_fails_the_clients_check(tmp_path: Path) -> None:
    # Whoever gets the CA's key can sign anything; clients that trust the CA still refuse a
    # name outside its constraints (OpenSSL checks them in the handshake).
    ca, _ = LocalCA.in_directory(tmp_path)
    ca._check_permitted = lambda sans: None  # type: ignore[method-assign]  # the forger skips the check
    forged = Pair(tmp_path / "forged.pem", tmp_path / "forged.key")
    ca.issue(["bank.example"]).write(forged.cert, forged.key)
    async with echo_backend() as port:
        path = tmp_path / "gw.yaml"
        write_config(
            path,
            {
                "listen": {"host": "127.0.0.1", "port": 0, "tls": {"certificates": [forged.entry()]}},
                "admin": None,
                "services": {"echo": {"instances": [f"http://127.0.0.1:{port}"]}},
                "routes": [{"match": {"path": "/**"}, "proxy": {"service": "echo"}}],
            },
        )
        async with serving(path) as server:
            ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            reason = await refused_handshake(server.port, ctx, "bank.example")
    assert "permitted subtree violation" in reason or "CERTIFICATE_VERIFY_FAILED" in reason
