"""``listen.tls`` and ``listen.http_redirect`` at config load: every certificate, key and CA file
is read and checked, and what cannot be served is refused with the file named and the key
located (file:line:col), before anything binds."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from tls_helpers import Pair, Pki, expired, write_config, write_pair
from typer.testing import CliRunner

from edgeway.gateway.config import ConfigError, load_config
from edgeway.gateway.config.schema import GatewayConfig
from edgeway.gateway.core.errors import ConfigIssue


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def base(tls: dict[str, Any] | None, **listen: Any) -> dict[str, Any]:
    return {
        "name": "tls-config",
        "listen": {"port": 8443, **({"tls": tls} if tls is not None else {}), **listen},
        "admin": None,
        "services": {"svc": {"instances": ["http://127.0.0.1:9"]}},
        "routes": [{"match": {"path": "/**"}, "proxy": {"service": "svc"}}],
    }


def issues(tmp_path: Path, config: dict[str, Any]) -> list[ConfigIssue]:
    path = tmp_path / "gw.yaml"
    write_config(path, config)
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    for issue in refused.value.issues:
        assert issue.line is not None, issue  # located in the file
        assert issue.file == str(path), issue
    return list(refused.value.issues)


def one_issue(tmp_path: Path, config: dict[str, Any]) -> ConfigIssue:
    (issue,) = issues(tmp_path, config)
    return issue


def self_signed(directory: Path, name: str, *, key_size: int = 2048, san: bool = True) -> Pair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "legacy.example")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("legacy.example")]), False)
    cert = builder.sign(key, hashes.SHA256())
    pair = Pair(directory / f"{name}.pem", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pair


def test_a_valid_tls_listener_loads_with_its_files_watched(tmp_path: Path, pki: Pki) -> None:
    path = tmp_path / "gw.yaml"
    tls = {
        "certificates": [pki.loopback.entry(), pki.api.entry(names=["API.example.com."])],
        "client_certificates": {"ca": str(pki.client_ca_file)},
        "hsts": {"max_age": "365d", "include_subdomains": True, "preload": True},
    }
    write_config(path, base(tls, http_redirect={"port": 8080}))
    sources: list[str] = []
    config = load_config(path, sources=sources)
    assert config.listen.tls is not None
    assert config.listen.tls.names == ("localhost", "127.0.0.1", "::1", "api.example.com")
    assert config.listen.tls.client_certificates is not None
    assert config.listen.tls.client_certificates.mode == "required"  # the secure default
    assert config.listen.tls.hsts is not None
    assert config.listen.tls.hsts.header_value() == b"max-age=31536000; includeSubDomains; preload"
    files = {
        str(p) for p in (pki.loopback.cert, pki.loopback.key, pki.api.cert, pki.api.key, pki.client_ca_file)
    }
    assert files <= set(sources)


def test_a_missing_file_is_named(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "nowhere.pem"
    issue = one_issue(
        tmp_path, base({"certificates": [{"cert": str(missing), "key": str(pki.loopback.key)}]})
    )
    assert issue.key_path == "listen.tls.certificates[0].cert"
    assert f"cannot read '{missing}'" in issue.message


@pytest.mark.parametrize(
    ("swap", "key_path", "message"),
    [
        ("cert_is_key", "listen.tls.certificates[0].cert", "holds no PEM certificate"),
        ("key_is_cert", "listen.tls.certificates[0].key", "holds no PEM private key"),
        ("other_key", "listen.tls.certificates[0].key", "does not belong to the certificate"),
        ("encrypted_key", "listen.tls.certificates[0].key", "is an encrypted key"),
    ],
)
def test_a_file_that_is_not_the_right_thing_is_refused(
    tmp_path: Path, pki: Pki, swap: str, key_path: str, message: str
) -> None:
    cert, key = pki.loopback.cert, pki.loopback.key
    if swap == "cert_is_key":
        cert = key
    elif swap == "key_is_cert":
        key = cert
    elif swap == "other_key":
        key = pki.api.key
    else:
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
        key = tmp_path / "encrypted.key"
        key.write_bytes(
            loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
    issue = one_issue(tmp_path, base({"certificates": [{"cert": str(cert), "key": str(key)}]}))
    assert issue.key_path == key_path
    assert message in issue.message


def test_an_expired_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    old = write_pair(tmp_path, "old", expired(pki.ca, "localhost"))
    issue = one_issue(tmp_path, base({"certificates": [old.entry()]}))
    assert issue.key_path == "listen.tls.certificates[0].cert"
    assert f"'{old.cert}'" in issue.message
    assert "expired on 2020-01-31" in issue.message


def test_a_certificate_not_valid_yet_is_refused(tmp_path: Path, pki: Pki) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    future = write_pair(
        tmp_path,
        "future",
        pki.ca.issue_cert("localhost", not_before=soon, not_after=soon + datetime.timedelta(1)),
    )
    assert "is not valid before" in one_issue(tmp_path, base({"certificates": [future.entry()]})).message


def test_a_weak_key_and_a_certificate_without_names_are_refused(tmp_path: Path) -> None:
    weak = self_signed(tmp_path, "weak", key_size=1024)
    issue = one_issue(tmp_path, base({"certificates": [weak.entry()]}))
    assert issue.key_path == "listen.tls.certificates[0].key"
    assert "RSA key of 1024 bits is too weak" in issue.message
    nameless = self_signed(tmp_path, "nameless", san=False)
    assert (
        "names no host in subjectAltName"
        in one_issue(tmp_path, base({"certificates": [nameless.entry()]})).message
    )


def test_a_chain_must_be_in_order(tmp_path: Path) -> None:
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("chain.example")
    pems = [blob.bytes() for blob in leaf.cert_chain_pems]
    assert len(pems) == 2  # the leaf, the intermediate
    good = Pair(tmp_path / "chain.pem", tmp_path / "chain.key")
    good.cert.write_bytes(pems[0] + pems[1])
    good.key.write_bytes(leaf.private_key_pem.bytes())
    write_config(tmp_path / "ok.yaml", base({"certificates": [good.entry()]}))
    load_config(tmp_path / "ok.yaml")
    good.cert.write_bytes(pems[1] + pems[0])  # the intermediate first
    issue = one_issue(tmp_path, base({"certificates": [good.entry()]}))
    assert "does not belong" in issue.message or "did not issue" in issue.message
    good.cert.write_bytes(pems[0] + root.cert_pem.bytes())  # skips the intermediate
    assert (
        "did not issue certificate 1" in one_issue(tmp_path, base({"certificates": [good.entry()]})).message
    )


def test_names_must_be_the_certificates_and_served_once(tmp_path: Path, pki: Pki) -> None:
    found = issues(
        tmp_path,
        base(
            {
                "certificates": [
                    pki.loopback.entry(),
                    pki.api.entry(names=["api.example.com", "www.example.com"]),
                ]
            }
        ),
    )
    assert [(i.key_path, i.message.split(" (")[0]) for i in found] == [
        (
            "listen.tls.certificates[1].names[1]",
            f"'www.example.com' is not a name of the certificate in '{pki.api.cert}'",
        )
    ]
    twice = one_issue(tmp_path, base({"certificates": [pki.loopback.entry(), pki.loopback.entry()]}))
    assert twice.key_path == "listen.tls.certificates[1].cert"
    assert "'localhost', '127.0.0.1', '::1' are also served by certificates[0]" in twice.message


@pytest.mark.parametrize(
    ("listen", "tls_extra", "routes", "key_path", "message"),
    [
        ({"http_redirect": {"port": 80}}, None, None, "listen.http_redirect", "needs 'tls'"),
        (
            {"http_redirect": {"port": 8443}},
            {},
            None,
            "listen.http_redirect.port",
            "HTTPS listener's own port",
        ),
        ({}, {"hsts": {"preload": True}}, None, "listen.tls.hsts", "preload needs max_age"),
        ({}, {"min_version": "1.1"}, None, "listen.tls.min_version", "'1.2' or '1.3'"),
        (
            {},
            {"client_certificates": {"ca": "/nowhere/ca.pem"}},
            None,
            "listen.tls.client_certificates.ca",
            "cannot read",
        ),
        (
            {},
            {},
            [{"match": {"path": "/**"}, "proxy": {"service": "svc"}, "client_cert": {"required": True}}],
            "routes[0].client_cert",
            "needs 'listen.tls.client_certificates'",
        ),
        (
            {},
            {"client_certificates": {"ca": "CA", "mode": "optional"}},
            [
                {
                    "match": {"path": "/**"},
                    "proxy": {"service": "svc"},
                    "client_cert": {"subjects": ["not a name"]},
                }
            ],
            "routes[0].client_cert.subjects",
            "not an RFC 4514 name",
        ),
    ],
)
def test_listener_settings_are_checked_together(
    tmp_path: Path,
    pki: Pki,
    listen: dict[str, Any],
    tls_extra: dict[str, Any] | None,
    routes: list[dict[str, Any]] | None,
    key_path: str,
    message: str,
) -> None:
    tls = None
    if tls_extra is not None:
        tls = {"certificates": [pki.loopback.entry()], **tls_extra}
        if tls_extra.get("client_certificates", {}).get("ca") == "CA":
            tls["client_certificates"]["ca"] = str(pki.client_ca_file)
    config = base(tls, **listen)
    if routes is not None:
        config["routes"] = routes
    issue = one_issue(tmp_path, config)
    assert issue.key_path.startswith(key_path), issue
    assert message in issue.message, issue


def test_the_redirect_port_counts_for_port_conflicts(tmp_path: Path, pki: Pki) -> None:
    config = base({"certificates": [pki.loopback.entry()]}, http_redirect={"port": 0})
    config["workers"] = 2
    config["admin"] = {"port": 8081}
    assert one_issue(tmp_path, config).key_path == "listen.http_redirect.port"
    config = base({"certificates": [pki.loopback.entry()]}, http_redirect={"port": 8081})
    config["admin"] = {"port": 8081}
    assert one_issue(tmp_path, config).key_path == "admin.port"


def test_config_check_names_the_file(tmp_path: Path, pki: Pki) -> None:
    from edgeway.gateway.process.config_cli import app

    path = tmp_path / "gw.yaml"
    write_config(path, base({"certificates": [{"cert": str(pki.loopback.cert), "key": str(pki.api.key)}]}))
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    assert f"{path}:" in result.output
    assert "listen.tls.certificates[0].key" in result.output
    assert str(pki.api.key) in result.output


def test_a_plaintext_listener_is_as_before() -> None:
    config = GatewayConfig.model_validate({"listen": {"port": 8080}})
    assert config.listen.tls is None
    assert config.listen.http_redirect is None
    assert config.listen.material_digest() is None
