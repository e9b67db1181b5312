"""A local certificate authority for development: certificates for loopback without a public CA.

``edgeway tls dev-certs DIR`` (or :func:`dev_certificates`) makes, in ``DIR``::

    ca.pem        the CA certificate: what clients trust (curl --cacert, a browser's authorities)
    ca.key        its private key (0600): keep it on this machine
    server.pem    a certificate for localhost, 127.0.0.1 and ::1, signed by the CA
    server.key
    client.pem    a client certificate (for mTLS), signed by the CA
    client.key

The CA is *name-constrained* by default: it can only vouch for ``localhost`` (and its
subdomains), ``.test``, ``.internal`` and the loopback addresses, so a copy of its key cannot be
used to impersonate any real site to a machine that trusts it. Keys are ECDSA P-256 (the fastest
handshakes); certificates follow what browsers require (subjectAltName, serverAuth/clientAuth
extended key usage, at most 397 days).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "LOOPBACK_NAMES",
    "DevCertificates",
    "IssuedCertificate",
    "LocalCA",
    "LocalCAError",
    "dev_certificates",
]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# What a constrained CA may vouch for (RFC 5280 §4.2.1.10: a DNS constraint covers the name and
# every name below it).
PERMITTED_DNS = ("localhost", "test", "internal")
PERMITTED_NETWORKS = ("127.0.0.0/8", "::1/128")
CA_DAYS = 3650
LEAF_DAYS = 397  # the longest validity browsers accept for a server certificate
CA_FILE, CA_KEY_FILE = "ca.pem", "ca.key"
_BACKDATE = datetime.timedelta(hours=1)  # a little clock skew between machines


class LocalCAError(Exception):
    """The local CA cannot be read or cannot issue what was asked; the message says why."""


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _general_name(name: str) -> x509.GeneralName:
    """A subjectAltName entry: an IP address, a URI (``spiffe://acme/orders``), an email
    address, else a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        pass
    if any(ch.isspace() for ch in name.strip()) or not name.strip():
        raise LocalCAError(f"'{name}' is neither a host name, an IP address, a URI nor an email address")
    if "://" in name:
        return x509.UniformResourceIdentifier(name.strip())
    if "@" in name:
        return x509.RFC822Name(name.strip())
    return x509.DNSName(name.strip().lower().rstrip("."))


def _write_private(path: Path, data: bytes) -> None:
    """Write a key readable by this user only (created with 0600, never widened)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate the local CA signed, and its private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_file: Path, key_file: Path) -> None:
        cert_file.parent.mkdir(parents=True, exist_ok=True)
        cert_file.write_bytes(self.cert_pem)
        _write_private(key_file, self.key_pem)


class LocalCA:
    """A certificate authority whose key lives in a file on this machine."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.cert = cert
        self.key = key

    @classmethod
    def create(cls, name: str | None = None, *, days: int = CA_DAYS, constrained: bool = True) -> LocalCA:
        """A new CA. ``constrained``: it can only issue for loopback and the development domains
        (:data:`PERMITTED_DNS`); without, for any name (then treat its key like a real CA's)."""
        key = _key()
        # A name of its own: several developers' (or runs') CAs must not look alike in a trust store.
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeway development"),
                x509.NameAttribute(NameOID.COMMON_NAME, name or f"edgeway local CA {secrets.token_hex(4)}"),
            ]
        )
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if constrained:
            permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in PERMITTED_DNS]
            permitted += [x509.IPAddress(ipaddress.ip_network(n)) for n in PERMITTED_NETWORKS]
            builder = builder.add_extension(
                x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True
            )
        return cls(builder.sign(key, hashes.SHA256()), key)

    @classmethod
    def load(cls, cert_file: Path, key_file: Path) -> LocalCA:
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        except OSError as exc:
            raise LocalCAError(f"cannot read the CA: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise LocalCAError(
                f"'{cert_file}' / '{key_file}' are not a PEM certificate and key: {exc}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise LocalCAError(f"'{key_file}' is not an EC key made by edgeway tls ca")
        return cls(cert, key)

    @classmethod
    def in_directory(cls, directory: Path, *, constrained: bool = True) -> tuple[LocalCA, bool]:
        """The CA kept in ``directory`` (``ca.pem``, ``ca.key``), made there if absent; and
        whether it was made now."""
        cert_file, key_file = directory / CA_FILE, directory / CA_KEY_FILE
        if cert_file.exists() or key_file.exists():
            return cls.load(cert_file, key_file), False
        ca = cls.create(constrained=constrained)
        ca.write(directory)
        return ca, True

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``ca.pem`` and ``ca.key`` (0600) into ``directory``."""
        cert_file, key_file = directory / CA_FILE, directory / CA_KEY_FILE
        IssuedCertificate(self.cert_pem, _key_pem(self.key)).write(cert_file, key_file)
        return cert_file, key_file

    def issue(
        self,
        names: Sequence[str],
        *,
        server: bool = True,
        client: bool = False,
        common_name: str | None = None,
        organization: str | None = None,
        days: int = LEAF_DAYS,
    ) -> IssuedCertificate:
        """A certificate for ``names`` (its subjectAltName: host names and IP addresses, also
        URIs and email addresses for a client), for a TLS server, a client (mTLS), or both."""
        if not server and not client:
            raise LocalCAError("a certificate must be for a server, a client or both")
        if server and not names:
            raise LocalCAError("a server certificate needs at least one name")
        sans = [_general_name(n) for n in names]
        self._check_permitted(sans)
        key = _key()
        attributes = [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name or (names[0] if names else "client"))
        ]
        if organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        now = datetime.datetime.now(datetime.UTC)
        not_after = min(now + datetime.timedelta(days=days), self.cert.not_valid_after_utc)
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server + [ExtendedKeyUsageOID.CLIENT_AUTH] * client
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return IssuedCertificate(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))

    def _check_permitted(self, sans: Sequence[x509.GeneralName]) -> None:
        try:
            constraints = self.cert.extensions.get_extension_for_class(x509.NameConstraints).value
        except x509.ExtensionNotFound:
            return
        for san in sans:
            if isinstance(san, x509.DNSName):
                allowed = [
                    c.value for c in constraints.permitted_subtrees or () if isinstance(c, x509.DNSName)
                ]
                if not any(san.value == d or san.value.endswith("." + d) for d in allowed):
                    raise LocalCAError(
                        f"this local CA only vouches for {', '.join(allowed)} and their subdomains, not "
                        f"'{san.value}' (make one that may with: edgeway tls ca --any-name)"
                    )
            elif isinstance(san, x509.IPAddress):
                networks = [
                    c.value for c in constraints.permitted_subtrees or () if isinstance(c, x509.IPAddress)
                ]
                address = san.value
                if not any(
                    isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network) and address in net
                    for net in networks
                ):
                    raise LocalCAError(
                        f"this local CA only vouches for loopback addresses, not {address} "
                        "(make one that may with: edgeway tls ca --any-name)"
                    )


@dataclass(frozen=True, slots=True)
class DevCertificates:
    """Where :func:`dev_certificates` wrote everything."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    created_ca: bool


def dev_certificates(
    directory: Path, names: Sequence[str] = LOOPBACK_NAMES, *, client: str = "developer"
) -> DevCertificates:
    """The local CA of ``directory`` (made if absent, kept otherwise: what browsers trust stays
    valid), and a fresh server certificate for ``names`` and client certificate for ``client``."""
    ca, created = LocalCA.in_directory(directory)
    server_cert, server_key = directory / "server.pem", directory / "server.key"
    ca.issue(names).write(server_cert, server_key)
    client_cert, client_key = directory / "client.pem", directory / "client.key"
    ca.issue((), server=False, client=True, common_name=client).write(client_cert, client_key)
    return DevCertificates(directory / CA_FILE, server_cert, server_key, client_cert, client_key, created)
