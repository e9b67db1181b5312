"""The TLS settings every handshake of a listener gets, on the standard library's ``ssl``.

- TLS 1.2 and 1.3 only (``min_version: "1.3"`` drops 1.2);
- TLS 1.2 ciphers: ECDHE key exchange (forward secrecy) with an AEAD cipher (AES-GCM,
  ChaCha20-Poly1305), nothing else: no RSA key exchange, no CBC, no SHA-1 MACs, no RC4/3DES;
  TLS 1.3's suites are all AEAD (OpenSSL's defaults);
- no TLS compression (CRIME), no renegotiation (client-initiated renegotiation is a DoS lever
  and TLS 1.3 has none);
- ALPN ``http/1.1`` (the listener picks the protocol by it: ``edgeway.http.listener``);
- session resumption: tickets (``session_tickets``) and OpenSSL's server-side session cache.

A listener's *handshake context* (:func:`handshake_context`) is made once per process and
holds these settings, the client-certificate mode and the SNI callback; it has no certificate.
Each configured certificate gets a *certificate context* (:func:`certificate_context`) with the
same settings plus its chain, key and the client CA bundle; the SNI callback switches a
handshake to one of them. OpenSSL takes the protocol versions, options and verify mode from the
first context and the certificate, the CAs and ALPN from the one switched to, so both carry
every setting.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from edgeway.gateway.core.errors import GatewayError
from edgeway.gateway.tls.config import ListenTls

if TYPE_CHECKING:
    # cryptography's x509 (~70 ms of imports): loaded by whoever builds the certificates, so a
    # gateway without TLS never pays it
    from edgeway.pki.certificates import CaBundle, ServerCertificate

__all__ = [
    "ALPN_PROTOCOLS",
    "ALPN_PROTOCOLS_H2",
    "TLS12_CIPHERS",
    "TlsSetupError",
    "certificate_context",
    "handshake_context",
]

# ECDHE + AEAD only (Mozilla's "intermediate" list without the DHE suites), ECDSA first.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
# What ALPN offers, in order of preference; a listener serving HTTP/2 (`listen.http2`) offers
# "h2" first (ALPN_PROTOCOLS_H2), its protocol chosen in
# edgeway.http.listener.Listener.protocol_after_handshake.
ALPN_PROTOCOLS = ("http/1.1",)
ALPN_PROTOCOLS_H2 = ("h2", "http/1.1")

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL}


class TlsSetupError(GatewayError):
    """OpenSSL refused a certificate or setting the config check accepted; names the file."""


def _settings(tls: ListenTls, http2: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    if not tls.session_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    # Every context offers the same: SNI switches a handshake to a certificate's context before
    # ALPN is chosen, so it is that context's list that counts.
    ctx.set_alpn_protocols(list(ALPN_PROTOCOLS_H2 if http2 else ALPN_PROTOCOLS))
    clients = tls.client_certificates
    ctx.verify_mode = ssl.CERT_NONE if clients is None else _VERIFY[clients.mode]
    return ctx


def handshake_context(tls: ListenTls, http2: bool = False) -> ssl.SSLContext:
    """The context a listener's handshakes start with (no certificate: set an SNI callback that
    switches to a :func:`certificate_context`)."""
    return _settings(tls, http2)


def certificate_context(
    tls: ListenTls, cert: ServerCertificate, client_ca: CaBundle | None, http2: bool = False
) -> ssl.SSLContext:
    """A context serving ``cert`` with the listener's settings and client CA bundle."""
    ctx = _settings(tls, http2)
    try:
        with _pem_file(cert.chain_pem) as chain, _pem_file(cert.key_pem) as key:
            ctx.load_cert_chain(chain, key)
    except ssl.SSLError as exc:
        raise TlsSetupError(f"'{cert.cert_file}' / '{cert.key_file}': OpenSSL refused them: {exc}") from None
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cadata=client_ca.pem.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise TlsSetupError(f"'{client_ca.file}': OpenSSL refused the CA bundle: {exc}") from None
    return ctx


@contextlib.contextmanager
def _pem_file(data: bytes) -> Iterator[str]:
    """A file name OpenSSL can read ``data`` from: an anonymous in-memory file on Linux, a
    private temporary file elsewhere. So the context gets the very bytes the config check
    read, not whatever the file holds a moment later."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and os.path.isdir("/proc/self/fd"):
        fd = memfd_create("edgeway-tls", os.MFD_CLOEXEC)
        try:
            _write_all(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="edgeway-tls-") as directory:
        path = os.path.join(directory, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        yield path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
