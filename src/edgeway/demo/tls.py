"""``edgeway demo --tls``: the shop over HTTPS, with mutual TLS between the edges and the services.

The certificates come from a local CA (:mod:`edgeway.pki`) kept in ``<data dir>/tls/``, made on
the first ``--tls`` run and kept afterwards (a browser or ``curl --cacert`` told to trust it
once keeps working across runs)::

    ca.pem, ca.key       the demo's CA: what a client trusts
    server.pem, .key     localhost, 127.0.0.1, ::1: every process that serves HTTPS presents it
    client.pem, .key     CN=edgeway-demo: what the edges and the services present to services
    edges.yaml           the edges' overlay: listen.tls and services.<name>.tls (included by
                         every edge config through ${SHOP_TLS_FILE})

Who serves what: the edges (the client-facing side), the web app's files and the security service
(the browser, partners and every edge fetch its tokens and keys) serve HTTPS to anyone; the kit
services and the legacy monolith serve HTTPS to clients with a certificate from the demo's CA
only (the edges and their peers). Every process trusts the CA for its own calls
(``SSL_CERT_FILE``, and the kit's ``tls_ca``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgeway.pki.local_ca import LOOPBACK_NAMES, LocalCA

__all__ = ["CLIENT_NAME", "DemoCertificates", "demo_certificates"]

CLIENT_NAME = "edgeway-demo"


@dataclass(frozen=True, slots=True)
class DemoCertificates:
    """Where the demo's CA and certificates are (all absolute)."""

    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"

    @property
    def edge_overlay(self) -> Path:
        return self.directory / "edges.yaml"

    def client_context(self) -> ssl.SSLContext:
        """What a client of the services uses: the CA, and the client certificate they require."""
        context = ssl.create_default_context(cafile=self.ca)
        context.load_cert_chain(self.client_cert, self.client_key)
        return context

    def serving_env(self, *, require_client_cert: bool) -> dict[str, str]:
        """The kit's settings (``EDGEWAY_TLS_*``) of a process that serves HTTPS and calls
        peers over mTLS; ``require_client_cert``: refuse clients without a certificate from the CA."""
        env = {
            "EDGEWAY_TLS_CERT": str(self.server_cert),
            "EDGEWAY_TLS_KEY": str(self.server_key),
            "EDGEWAY_TLS_CA": str(self.ca),
            "EDGEWAY_TLS_CLIENT_CERT": str(self.client_cert),
            "EDGEWAY_TLS_CLIENT_KEY": str(self.client_key),
            "SSL_CERT_FILE": str(self.ca),  # the process's other HTTP clients (httpx) trust the CA
        }
        if require_client_cert:
            env["EDGEWAY_TLS_CLIENT_CA"] = str(self.ca)
            env["EDGEWAY_TLS_CLIENT_CERT_REQUIRED"] = "true"
        return env

    def edge_env(self) -> dict[str, str]:
        """What an edge gets: its overlay, and the CA for its token-key and revocation fetches."""
        return {"SHOP_TLS_FILE": str(self.edge_overlay), "SSL_CERT_FILE": str(self.ca)}

    def write_edge_overlay(self, services: Iterable[str]) -> None:
        """The edges' overlay: HTTPS on the listener, and the CA and client certificate for each
        of ``services`` (the ones the edge configs declare)."""
        upstream = {"ca": str(self.ca), "cert": str(self.client_cert), "key": str(self.client_key)}
        served = {"cert": str(self.server_cert), "key": str(self.server_key)}
        overlay = {
            "listen": {"tls": {"certificates": [served]}},
            "services": {name: {"tls": dict(upstream)} for name in services},
        }
        header = "# Written by `edgeway demo --tls` (edgeway.demo.tls); rewritten on every run.\n"
        self.edge_overlay.write_text(header + yaml.safe_dump(overlay, sort_keys=False))


def demo_certificates(directory: Path) -> DemoCertificates:
    """The demo's CA and certificates in ``directory``: made the first time, kept afterwards
    (a leaf is made again only when its file is missing)."""
    certs = DemoCertificates(directory)
    ca, _ = LocalCA.in_directory(directory)
    if not (certs.server_cert.exists() and certs.server_key.exists()):
        ca.issue(LOOPBACK_NAMES).write(certs.server_cert, certs.server_key)
    if not (certs.client_cert.exists() and certs.client_key.exists()):
        ca.issue((), server=False, client=True, common_name=CLIENT_NAME, organization="shop").write(
            certs.client_cert, certs.client_key
        )
    return certs
