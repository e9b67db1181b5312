"""A TLS scan (sslyze) of a running ``edgeway gateway`` process, the way an auditor scans an
edge: no protocol below TLS 1.2, no cipher without forward secrecy and AEAD, no compression,
no client-initiated renegotiation, no Heartbleed, the certificate chain served whole and in
order, and SNI choosing the right certificate."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import trustme
from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
from sslyze.plugins.scan_commands import ScanCommand
from sslyze.scanner.models import (
    ScanCommandsExtraArguments,
    ServerScanRequest,
    ServerScanResult,
    ServerScanStatusEnum,
)
from sslyze.scanner.scan_command_attempt import ScanCommandAttempt, ScanCommandAttemptStatusEnum
from sslyze.scanner.scanner import Scanner
from sslyze.server_setting import ServerNetworkLocation
from tls_helpers import chained_pki

from conftest import gateway_ports

# sslyze loads its bundled trust stores, some of whose certificates cryptography warns about.
pytestmark = pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")

PROTOCOLS_REFUSED = (
    "ssl_2_0_cipher_suites",
    "ssl_3_0_cipher_suites",
    "tls_1_0_cipher_suites",
    "tls_1_1_cipher_suites",
)
FULL_SCAN = {
    ScanCommand.SSL_2_0_CIPHER_SUITES,
    ScanCommand.SSL_3_0_CIPHER_SUITES,
    ScanCommand.TLS_1_0_CIPHER_SUITES,
    ScanCommand.TLS_1_1_CIPHER_SUITES,
    ScanCommand.TLS_1_2_CIPHER_SUITES,
    ScanCommand.TLS_1_3_CIPHER_SUITES,
    ScanCommand.TLS_COMPRESSION,
    ScanCommand.SESSION_RENEGOTIATION,
    ScanCommand.HEARTBLEED,
    ScanCommand.CERTIFICATE_INFO,
}


R = TypeVar("R")


def done(attempt: ScanCommandAttempt[R]) -> R:
    """A scan command's result; fails the test when the command did not complete."""
    assert attempt.status is ScanCommandAttemptStatusEnum.COMPLETED, attempt.error_trace
    assert attempt.result is not None
    return attempt.result


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """``edgeway gateway`` serving HTTPS with certificates from an intermediate CA (so the chain
    has something to get wrong); yields its port and the root CA's file."""
    root_file, pairs = chained_pki(
        tmp_path, {"loopback": ["localhost", "127.0.0.1"], "api": ["api.example.com"]}
    )
    loopback, api = pairs["loopback"], pairs["api"]
    clients_file = tmp_path / "clients.pem"
    trustme.CA().cert_pem.write_to_path(str(clients_file))
    config = {
        "name": "scanned",
        "listen": {
            "host": "127.0.0.1",
            "port": 0,
            "tls": {
                "certificates": [loopback.entry(), api.entry()],
                "client_certificates": {"ca": str(clients_file), "mode": "optional"},
                "hsts": {"max_age": 60},
            },
        },
        "admin": None,
        "access_log": {"enabled": False},
        "services": {"svc": {"instances": ["http://127.0.0.1:9"]}},
        "routes": [{"match": {"path": "/**"}, "proxy": {"service": "svc"}}],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        port, _ = gateway_ports(proc.stdout)
        yield port, root_file
    finally:
        proc.terminate()
        proc.wait(30)


def scan(port: int, root: Path) -> list[ServerScanResult]:
    extra = ScanCommandsExtraArguments(certificate_info=CertificateInfoExtraArgument(custom_ca_file=root))
    scanner = Scanner()
    scanner.queue_scans(
        [
            ServerScanRequest(
                server_location=ServerNetworkLocation("localhost", port, ip_address="127.0.0.1"),
                scan_commands=FULL_SCAN,
                scan_commands_extra_arguments=extra,
            ),
            ServerScanRequest(  # SNI: another name, another certificate
                server_location=ServerNetworkLocation("api.example.com", port, ip_address="127.0.0.1"),
                scan_commands={ScanCommand.CERTIFICATE_INFO},
                scan_commands_extra_arguments=extra,
            ),
        ]
    )
    return sorted(scanner.get_results(), key=lambda r: r.server_location.hostname != "localhost")


async def test_a_tls_scan_finds_nothing_weak(gateway: tuple[int, Path]) -> None:
    port, root = gateway
    full, api = await asyncio.to_thread(scan, port, root)
    for result in (full, api):
        assert result.scan_status is ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    found = full.scan_result
    assert found is not None
    for name in PROTOCOLS_REFUSED:
        assert done(getattr(found, name)).accepted_cipher_suites == [], name

    tls12 = [s.cipher_suite.name for s in done(found.tls_1_2_cipher_suites).accepted_cipher_suites]
    assert tls12, "TLS 1.2 is served"
    for suite in tls12:
        assert suite.startswith("TLS_ECDHE_"), suite  # forward secrecy
        assert "_GCM_" in suite or "CHACHA20_POLY1305" in suite, suite  # AEAD: no CBC, no SHA-1 MAC
    assert done(found.tls_1_3_cipher_suites).accepted_cipher_suites

    assert done(found.tls_compression).supports_compression is False
    renegotiation = done(found.session_renegotiation)
    assert renegotiation.is_vulnerable_to_client_renegotiation_dos is False
    assert renegotiation.client_renegotiations_success_count == 0
    assert done(found.heartbleed).is_vulnerable_to_heartbleed is False

    (deployment,) = done(found.certificate_info).certificate_deployments
    chain = [cert.subject.rfc4514_string() for cert in deployment.received_certificate_chain]
    assert deployment.received_chain_has_valid_order is True
    assert chain == ["CN=localhost", "CN=Scan Intermediate"]  # not the root
    supplied = [p for p in deployment.path_validation_results if p.trust_store.name == "Supplied CA file"]
    assert [p.was_validation_successful for p in supplied] == [True], [p.validation_error for p in supplied]

    assert api.scan_result is not None
    (api_deployment,) = done(api.scan_result.certificate_info).certificate_deployments
    leaf = api_deployment.received_certificate_chain[0]
    from cryptography import x509

    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.example.com"]
