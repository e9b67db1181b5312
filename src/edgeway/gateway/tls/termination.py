"""A TLS listener's certificates, chosen by SNI, and swapped by a live reload without dropping a
connection.

The listening socket keeps one handshake context for the life of the process (the listener hands
the same one to every connection it accepts). Its SNI callback reads the *current* :class:`CertificateSet` and
switches each new handshake to the context of the certificate the client asked for: the exact
name, else the one-label wildcard (``*.example.com`` for ``api.example.com``), else the default
(the first certificate), also for clients that send no SNI (connections to an IP address).
A reload builds a new set from the new config (:meth:`TlsTermination.prepare`) and swaps it in
(:meth:`TlsTermination.use`) in one step on the event loop: handshakes from then on get the new
certificates, connections already open keep theirs. Session tickets are keyed by the handshake
context, so they survive a reload too.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from typing import Any

from edgeway.gateway.tls.config import ListenTls
from edgeway.gateway.tls.context import certificate_context, handshake_context
from edgeway.pki.names import host_name

__all__ = ["CertificateSet", "TlsTermination"]


class CertificateSet:
    """The certificate contexts of one config, by the names SNI selects them by."""

    __slots__ = ("default", "exact", "summary", "wildcard")

    def __init__(
        self, entries: Sequence[tuple[Sequence[str], ssl.SSLContext]], summary: list[dict[str, Any]]
    ) -> None:
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}  # "*.example.com" under "example.com"
        for names, ctx in entries:
            for name in names:
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], ctx)
                else:
                    self.exact.setdefault(name, ctx)
        self.default = entries[0][1]
        self.summary = summary  # what the log says about them

    @classmethod
    def build(cls, tls: ListenTls, http2: bool = False) -> CertificateSet:
        """Contexts for every certificate of ``tls`` (TlsSetupError when OpenSSL refuses one)."""
        ca = tls.client_certificates.bundle if tls.client_certificates is not None else None
        entries: list[tuple[Sequence[str], ssl.SSLContext]] = []
        summary: list[dict[str, Any]] = []
        for cert in tls.certificates:
            loaded = cert.loaded
            entries.append((cert.served_names, certificate_context(tls, loaded, ca, http2)))
            summary.append(
                {
                    "cert": loaded.cert_file,
                    "names": list(cert.served_names),
                    "not_after": loaded.not_after.isoformat(),
                    "sha256": loaded.sha256,
                }
            )
        return cls(entries, summary)

    def select(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        name = host_name(server_name)
        found = self.exact.get(name)
        if found is not None:
            return found
        _, dot, parent = name.partition(".")
        if dot:
            found = self.wildcard.get(parent)
            if found is not None:
                return found
        return self.default

    def covers(self, host: str) -> bool:
        """Whether a certificate of this set is served for ``host`` (normalised) by name."""
        if host in self.exact:
            return True
        _, dot, parent = host.partition(".")
        return bool(dot) and parent in self.wildcard


class TlsTermination:
    """The TLS side of one listener: its handshake context and the current certificates."""

    def __init__(self, tls: ListenTls, http2: bool = False) -> None:
        self.http2 = http2  # ALPN offers h2 (listen.http2; fixed for the life of the process)
        self.certificates = CertificateSet.build(tls, http2)
        self.context = handshake_context(tls, http2)
        self.context.sni_callback = self._on_server_name

    def _on_server_name(self, ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        # Called by OpenSSL in every handshake, with None when the client sent no SNI.
        ssl_object.context = self.certificates.select(server_name)

    def prepare(self, tls: ListenTls) -> CertificateSet:
        """The certificates of a new config, ready to :meth:`use` (TlsSetupError if refused)."""
        return CertificateSet.build(tls, self.http2)

    def use(self, certificates: CertificateSet) -> None:
        """New handshakes get ``certificates`` from now on; open connections keep theirs."""
        self.certificates = certificates
