"""The service kit over TLS: serving HTTPS (and asking for, or requiring, client certificates),
the kit's own calls to TLS peers, and the verified client certificate of a request.

Settings (``EDGEWAY_TLS_*``, see :class:`~edgeway.service.settings.ServiceSettings`):

- serving: ``tls_cert`` and ``tls_key`` make the service serve HTTPS only (TLS 1.2 and 1.3, ECDHE
  with AES-GCM or ChaCha20); ``tls_client_ca`` makes it ask clients for a certificate signed by
  that CA, and ``tls_client_cert_required`` refuses a client without one (mTLS: a gateway, or a
  peer service, with its client certificate);
- calling: ``tls_ca`` is the CA bundle the kit's clients (:class:`~edgeway.service.clients.
  ServiceClient`, the JWKS and revocation fetches) trust instead of the system's CAs, and
  ``tls_client_cert``/``tls_client_key`` the certificate they present to peers that ask for one.

Every file is checked when the settings are built: a missing file or a key that does not match
its certificate is a settings error naming the setting, never a service that starts and then
refuses every handshake.

The client certificate a request came with is in its ASGI scope as the standard TLS extension
(``scope["extensions"]["tls"]``, filled in by the kit's HTTP protocol,
:class:`~edgeway.service.http.HeadOnlyHttpTools`); endpoints read it as a
:class:`PeerCertificate` with the ``ClientCertificate`` dependency or :func:`peer_certificate`.
A certificate is there only when the handshake verified it against ``tls_client_ca``.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from fastapi import Depends, Request

from edgeway.http.upstream_tls import client_context

if TYPE_CHECKING:
    from edgeway.service.settings import ServiceSettings

__all__ = [
    "SERVER_CIPHERS",
    "ClientCertificate",
    "PeerCertificate",
    "client_tls_context",
    "parse_certificate",
    "peer_certificate",
    "server_context",
    "settings_problems",
    "tls_extension",
    "uvicorn_tls_options",
]

# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all of that kind).
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


# -- serving -------------------------------------------------------------------------------


def server_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The context the service serves with, as uvicorn builds it from
    :func:`uvicorn_tls_options`; None when it serves plain HTTP."""
    if settings.tls_cert is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.set_ciphers(SERVER_CIPHERS)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        ctx.load_verify_locations(cafile=settings.tls_client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.tls_client_cert_required else ssl.CERT_OPTIONAL
    return ctx


def uvicorn_tls_options(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` serving what ``settings`` say:
    none for plain HTTP."""
    if settings.tls_cert is None:
        return {}
    if settings.tls_client_ca is None:
        cert_reqs = ssl.CERT_NONE
    else:
        cert_reqs = ssl.CERT_REQUIRED if settings.tls_client_cert_required else ssl.CERT_OPTIONAL
    return {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key) if settings.tls_key is not None else None,
        "ssl_ca_certs": str(settings.tls_client_ca) if settings.tls_client_ca is not None else None,
        "ssl_cert_reqs": cert_reqs,
        "ssl_ciphers": SERVER_CIPHERS,
    }


# -- calling peers ---------------------------------------------------------------------------


def client_tls_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """The context of the kit's calls to peers when the settings say anything about it
    (``tls_ca``, ``tls_client_cert``); None: httpx's default (the system's CAs)."""
    if settings.tls_ca is None and settings.tls_client_cert is None:
        return None
    return client_context(
        ca=str(settings.tls_ca) if settings.tls_ca is not None else None,
        cert=str(settings.tls_client_cert) if settings.tls_client_cert is not None else None,
        key=str(settings.tls_client_key) if settings.tls_client_key is not None else None,
    )


# -- checking the settings -------------------------------------------------------------------


def settings_problems(settings: ServiceSettings) -> list[str]:
    """What is wrong with the TLS settings, one line each naming the setting (empty: nothing)."""
    s = settings
    problems: list[str] = []
    needs = [
        (s.tls_key is not None and s.tls_cert is None, "tls_key is set without tls_cert"),
        (
            s.tls_client_ca is not None and s.tls_cert is None,
            "tls_client_ca is set without tls_cert: only a service serving TLS can ask for client "
            "certificates",
        ),
        (
            s.tls_client_cert_required and s.tls_client_ca is None,
            "tls_client_cert_required needs tls_client_ca, the CA client certificates are verified against",
        ),
        (
            s.tls_client_key is not None and s.tls_client_cert is None,
            "tls_client_key is set without tls_client_cert",
        ),
        (
            s.tls_cert is not None and (s.advertise_url or "").startswith("http://"),
            f"advertise_url {s.advertise_url} is http:// but the service serves HTTPS (tls_cert): "
            "advertise https://",
        ),
    ]
    problems.extend(message for wrong, message in needs if wrong)
    for name in ("tls_cert", "tls_key", "tls_client_ca", "tls_ca", "tls_client_cert", "tls_client_key"):
        path: Path | None = getattr(s, name)
        if path is not None and not path.is_file():
            problems.append(f"{name}: file {path} does not exist or is not a file")
    if problems:
        return problems
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for name in ("tls_client_ca", "tls_ca"):
        path = getattr(s, name)
        if path is not None:
            try:
                probe.load_verify_locations(cafile=path)
            except (ssl.SSLError, OSError) as exc:
                problems.append(f"{name}: {path} holds no usable PEM certificate ({_why(exc)})")
    for cert_name, key_name in (("tls_cert", "tls_key"), ("tls_client_cert", "tls_client_key")):
        problems.extend(_chain_problems(cert_name, getattr(s, cert_name), key_name, getattr(s, key_name)))
    return problems


def _chain_problems(cert_name: str, cert: Path | None, key_name: str, key: Path | None) -> list[str]:
    if cert is None:
        return []
    try:
        leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except (ValueError, OSError) as exc:
        return [f"{cert_name}: {cert} holds no PEM certificate ({exc})"]
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            return [
                f"{key_name if key is not None else cert_name}: the private key in {key or cert} does not "
                f"match the certificate in {cert} ({leaf.subject.rfc4514_string()})"
            ]
        where = (key_name, key) if key is not None else (cert_name, cert)
        return [f"{where[0]}: {where[1]} holds no usable unencrypted PEM private key ({_why(exc)})"]
    return []


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


# -- the client certificate of a request -----------------------------------------------------


def tls_extension(ssl_object: Any) -> dict[str, Any]:
    """The ASGI TLS extension of a connection (``scope["extensions"]["tls"]``) from its
    ``ssl.SSLObject``: the verified client certificate (PEM) and its subject (RFC 4514), the
    TLS version."""
    der = ssl_object.getpeercert(binary_form=True)
    chain: list[str] = []
    name: str | None = None
    if der:
        chain = [ssl.DER_cert_to_PEM_cert(der)]
        name = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    return {
        "server_cert": None,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": None,
    }


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The verified certificate a client presented: a gateway or a peer service (mTLS)."""

    subject: str  # RFC 4514, e.g. "CN=edge-gateway,O=shop"
    common_name: str | None
    dns_names: tuple[str, ...]  # the subjectAltName DNS entries
    issuer: str
    serial_number: int
    pem: str


@functools.lru_cache(maxsize=256)
def _parse(pem: str) -> PeerCertificate:
    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns_names = ()
    return PeerCertificate(
        subject=cert.subject.rfc4514_string(),
        common_name=str(names[0].value) if names else None,
        dns_names=dns_names,
        issuer=cert.issuer.rfc4514_string(),
        serial_number=cert.serial_number,
        pem=pem,
    )


def parse_certificate(pem: str) -> PeerCertificate:
    """A verified certificate (PEM) as a :class:`PeerCertificate` (parsed once per certificate):
    what the gRPC side reads from its call's auth context."""
    return _parse(pem)


def peer_certificate(request: Request) -> PeerCertificate | None:
    """The verified client certificate ``request`` came with; None over plain HTTP, from a
    client that presented none, or under a server that does not fill in the TLS extension."""
    tls = (request.scope.get("extensions") or {}).get("tls")
    if not tls:
        return None
    chain = tls.get("client_cert_chain") or ()
    return _parse(chain[0]) if chain else None


ClientCertificate = Annotated[PeerCertificate | None, Depends(peer_certificate)]
"""Declare ``cert: ClientCertificate`` in an endpoint to get the caller's verified certificate."""
