"""Check a server certificate and its key, and a CA bundle, before anything serves them.

What a TLS listener would otherwise find out at the first handshake (or never: a client just
fails) is refused here with the file named: a file that holds no PEM certificate or key, an
encrypted key, a key that does not belong to the certificate, a weak key, a certificate that
expired or is not valid yet, a chain out of order (each certificate must be followed by the one
that issued it), a certificate without subjectAltName names (clients stopped reading the common
name years ago).

The bytes that were checked are kept (:class:`ServerCertificate`): whoever builds the TLS
context from them serves exactly what was checked, even if the file changes a moment later.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from edgeway.pki.names import covers, host_name, uncovered

__all__ = [
    "CaBundle",
    "CertificateError",
    "ServerCertificate",
    "covers",
    "host_name",
    "load_ca_bundle",
    "load_server_certificate",
    "uncovered",
]

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256

Role = Literal["cert", "key", "ca"]


class CertificateError(ValueError):
    """A certificate, key or CA file that cannot be served; the message names the file.
    ``role`` says which of the files is at fault (``cert``, ``key`` or ``ca``)."""

    def __init__(self, message: str, role: Role = "cert") -> None:
        super().__init__(message)
        self.role: Role = role


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    """A checked certificate chain and its private key, as read from their files."""

    cert_file: str
    key_file: str
    chain_pem: bytes  # the certificate, then the intermediates that issued it
    key_pem: bytes
    names: tuple[str, ...]  # subjectAltName DNS names (lower case) and IP addresses
    subject: str  # RFC 4514
    not_after: datetime.datetime
    sha256: str  # of the certificate (DER), hex

    @property
    def digest(self) -> str:
        """Changes whenever either file's content does."""
        return hashlib.sha256(self.chain_pem + b"\0" + self.key_pem).hexdigest()


@dataclass(frozen=True, slots=True)
class CaBundle:
    """Certificate authorities, as read from one PEM file."""

    file: str
    pem: bytes
    subjects: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.pem).hexdigest()


def _read(path: str, role: Role) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CertificateError(f"cannot read '{path}': {exc.strerror or exc}", role) from None


def _certificates(data: bytes, path: str, role: Role) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(
            f"'{path}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)", role
        ) from None


def _check_dates(cert: x509.Certificate, path: str, now: datetime.datetime, what: str) -> None:
    if cert.not_valid_after_utc <= now:
        raise CertificateError(
            f"{what} in '{path}' ({cert.subject.rfc4514_string()}) expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.not_valid_before_utc > now:
        raise CertificateError(
            f"{what} in '{path}' ({cert.subject.rfc4514_string()}) is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (is this machine's clock right?)"
        )


def _public_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_key_strength(key: object, path: str, role: Role) -> None:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise CertificateError(
            f"'{path}': an RSA key of {key.key_size} bits is too weak ({MIN_RSA_BITS} at least)", role
        )
    if (
        isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey)
        and key.curve.key_size < MIN_EC_BITS
    ):
        raise CertificateError(f"'{path}': an EC key on {key.curve.name} is too weak (P-256 at least)", role)
    if isinstance(key, dsa.DSAPrivateKey | dsa.DSAPublicKey):
        raise CertificateError(
            f"'{path}': DSA keys are not accepted by TLS 1.2+ clients; use EC or RSA", role
        )


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    dns = [host_name(name) for name in san.get_values_for_type(x509.DNSName)]
    ips = [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(dict.fromkeys([*dns, *ips]))


def load_server_certificate(
    cert_file: str, key_file: str, *, now: datetime.datetime | None = None
) -> ServerCertificate:
    """Read and check a server's certificate chain and key; :class:`CertificateError` says what
    is wrong and with which file."""
    now = now or datetime.datetime.now(datetime.UTC)
    chain_pem = _read(cert_file, "cert")
    chain = _certificates(chain_pem, cert_file, "cert")
    key_pem = _read(key_file, "key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError(
            f"'{key_file}' is an encrypted key: edgeway reads unencrypted PEM keys (keep the file "
            "readable by the gateway's user only)",
            "key",
        ) from None
    except ValueError:
        raise CertificateError(
            f"'{key_file}' holds no PEM private key (-----BEGIN PRIVATE KEY-----)", "key"
        ) from None
    except Exception as exc:  # an unsupported key type: cryptography's own error
        raise CertificateError(f"'{key_file}': cannot read the key ({exc})", "key") from None
    if not isinstance(
        key,
        rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey,
    ):
        raise CertificateError(f"'{key_file}': a {type(key).__name__} cannot sign TLS handshakes", "key")
    _check_key_strength(key, key_file, "key")
    leaf = chain[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise CertificateError(
            f"the key in '{key_file}' does not belong to the certificate in '{cert_file}' "
            f"({leaf.subject.rfc4514_string()})",
            "key",
        )
    for index, cert in enumerate(chain):
        what = "the certificate" if index == 0 else f"certificate {index + 1} of the chain"
        _check_dates(cert, cert_file, now, what)
        if index + 1 < len(chain):
            issuer = chain[index + 1]
            try:
                cert.verify_directly_issued_by(issuer)
            except (ValueError, TypeError, InvalidSignature):
                raise CertificateError(
                    f"'{cert_file}': certificate {index + 2} ({issuer.subject.rfc4514_string()}) did not "
                    f"issue certificate {index + 1} ({cert.subject.rfc4514_string()}); the file must "
                    "hold the server's certificate first, then each issuer in order",
                ) from None
    names = _names(leaf)
    if not names:
        raise CertificateError(
            f"'{cert_file}' ({leaf.subject.rfc4514_string()}) names no host in subjectAltName: "
            "clients no longer read the common name; issue it with DNS or IP names"
        )
    return ServerCertificate(
        cert_file=cert_file,
        key_file=key_file,
        chain_pem=chain_pem,
        key_pem=key_pem,
        names=names,
        subject=leaf.subject.rfc4514_string(),
        not_after=leaf.not_valid_after_utc,
        sha256=leaf.fingerprint(hashes.SHA256()).hex(),
    )


def load_ca_bundle(path: str, *, now: datetime.datetime | None = None) -> CaBundle:
    """Read the CA certificates clients' certificates are checked against."""
    now = now or datetime.datetime.now(datetime.UTC)
    pem = _read(path, "ca")
    certs = _certificates(pem, path, "ca")
    usable = [cert for cert in certs if cert.not_valid_after_utc > now]
    if not usable:
        raise CertificateError(f"every certificate in '{path}' has expired", "ca")
    return CaBundle(path, pem, tuple(cert.subject.rfc4514_string() for cert in usable))
