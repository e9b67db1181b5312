"""The client certificate of a mutual TLS connection, read once per connection.

The handshake verified it against the listener's CA bundle (a listener without
``client_certificates`` never asks for one); this module parses it on first use and keeps the
result on the connection (``TlsInfo.peer``), so every further request on the connection costs a
lookup. What services receive, instead of whatever a client sent under these names::

    X-Edgeway-Client-Cert-Subject: CN=partner-a,O=Acme          (RFC 4514)
    X-Edgeway-Client-Cert-Issuer:  CN=Acme Partners CA,O=Acme
    X-Edgeway-Client-Cert-SANs:    DNS:partner-a.example, URI:spiffe://acme/partner-a
    X-Edgeway-Client-Cert-Sha256:  9f86d081...                  (the certificate's fingerprint)

Control characters in a name are written as RFC 4514 hex escapes (``\\0A``), commas inside a
subjectAltName value as ``%2C``, so a value is always one header line and the SAN list splits on
``", "``.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from edgeway.gateway.core.identity import ClientCertificate, Identity
from edgeway.http.exchange import Headers
from edgeway.http.server_tls import TlsInfo

__all__ = ["CLIENT_CERT_HEADER_PREFIX", "PeerCertificate", "peer_certificate"]

CLIENT_CERT_HEADER_PREFIX = "x-edgeway-client-cert-"
SUBJECT = b"x-edgeway-client-cert-subject"
ISSUER = b"x-edgeway-client-cert-issuer"
SANS = b"x-edgeway-client-cert-sans"
SHA256 = b"x-edgeway-client-cert-sha256"

_NO_CERTIFICATE = False  # TlsInfo.peer once looked at, for a connection without a certificate
_SAN_TYPES: tuple[tuple[type[x509.GeneralName], str], ...] = (
    (x509.DNSName, "DNS"),
    (x509.UniformResourceIdentifier, "URI"),
    (x509.RFC822Name, "email"),
    (x509.IPAddress, "IP"),
)


class PeerCertificate:
    """A verified client certificate, the identity it vouches for and the header lines it
    becomes."""

    __slots__ = ("certificate", "headers", "identity")

    def __init__(self, certificate: ClientCertificate) -> None:
        self.certificate = certificate
        self.identity: Identity = certificate.identity()
        self.headers: Headers = [
            (SUBJECT, _name_value(certificate.subject)),
            (ISSUER, _name_value(certificate.issuer)),
            (SANS, b", ".join(_san_value(entry) for entry in certificate.sans)),
            (SHA256, certificate.sha256.encode()),
        ]


def peer_certificate(tls: TlsInfo) -> PeerCertificate | None:
    """The connection's verified client certificate, parsed once per connection."""
    found = tls.peer
    if isinstance(found, PeerCertificate):
        return found
    if found is _NO_CERTIFICATE or tls.peer_der is None:
        tls.peer = _NO_CERTIFICATE
        return None
    parsed = PeerCertificate(parse_certificate(tls.peer_der))
    tls.peer = parsed
    return parsed


def parse_certificate(der: bytes) -> ClientCertificate:
    cert = x509.load_der_x509_certificate(der)
    sans: list[str] = []
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        for kind, label in _SAN_TYPES:
            sans += [f"{label}:{value}" for value in names.get_values_for_type(kind)]  # type: ignore[arg-type]
    return ClientCertificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=tuple(sans),
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def _name_value(text: str) -> bytes:
    raw = text.encode("utf-8")
    if all(0x20 <= b != 0x7F for b in raw):
        return raw
    return b"".join(b"\\%02X" % b if b < 0x20 or b == 0x7F else bytes([b]) for b in raw)


def _san_value(entry: str) -> bytes:
    raw = entry.encode("utf-8")
    return b"".join(b"%%%02X" % b if b < 0x20 or b == 0x7F or b == 0x2C else bytes([b]) for b in raw)
