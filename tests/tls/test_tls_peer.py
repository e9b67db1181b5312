"""The client certificate kept on a TLS connection (``TlsInfo.peer``): parsed once, and read
back only as what the gateway put there."""

from __future__ import annotations

import ssl
from typing import cast

import pytest
import trustme

from edgeway.gateway.core.identity import ClientCertificate
from edgeway.gateway.tls import peer
from edgeway.gateway.tls.peer import PeerCertificate, peer_certificate
from edgeway.http.server_tls import TlsInfo

NO_SSL = cast(ssl.SSLObject, None)  # peer_certificate reads only the certificate's DER


@pytest.fixture(scope="module")
def der() -> bytes:
    cert = trustme.CA().issue_cert("partner.example")
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


def test_the_certificate_is_parsed_once_per_connection(der: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[bytes] = []
    parse = peer.parse_certificate

    def counting(data: bytes) -> ClientCertificate:
        parsed.append(data)
        return parse(data)

    monkeypatch.setattr(peer, "parse_certificate", counting)
    info = TlsInfo(NO_SSL, "http/1.1", der)
    first = peer_certificate(info)
    assert first is not None
    assert peer_certificate(info) is first
    assert parsed == [der]
    assert "DNS:partner.example" in first.certificate.sans


def test_a_connection_without_a_certificate_is_looked_at_once() -> None:
    info = TlsInfo(NO_SSL, None, None)
    assert peer_certificate(info) is None
    assert info.peer is not None  # remembered: the next request does not look again
    assert peer_certificate(info) is None


def test_a_value_the_gateway_did_not_put_there_is_not_taken_for_a_certificate(der: bytes) -> None:
    info = TlsInfo(NO_SSL, "http/1.1", der)
    info.peer = "not a certificate"
    found = peer_certificate(info)
    assert isinstance(found, PeerCertificate)
    assert found.certificate.sans == ("DNS:partner.example",)
