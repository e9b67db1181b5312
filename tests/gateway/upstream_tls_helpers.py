"""Certificates for TLS between the gateway (or a kit service) and services, made by trustme:
a CA, a service certificate for loopback, a client certificate, and a second CA nobody trusts.
Every file is written once per test into its own directory."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import trustme

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Pki:
    ca: trustme.CA
    ca_file: Path  # the CA that signed the service and client certificates
    cert_file: Path  # the service's certificate, for localhost and 127.0.0.1
    key_file: Path
    client_cert_file: Path  # a client certificate (subject CN=edge-gateway), for mTLS
    client_key_file: Path
    other_ca_file: Path  # a CA that signed nothing here
    service: trustme.LeafCert

    def server_context(
        self, leaf: trustme.LeafCert | None = None, *, require_client: bool = False
    ) -> ssl.SSLContext:
        """A server context serving ``leaf`` (the service certificate by default), asking for a
        client certificate signed by the CA when ``require_client``."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        (leaf or self.service).configure_cert(ctx)
        if require_client:
            self.ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        if with_cert:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx

    def issue(self, *names: str, expired: bool = False) -> trustme.LeafCert:
        if not expired:
            return self.ca.issue_cert(*names)
        now = datetime.datetime.now(datetime.UTC)
        return self.ca.issue_cert(
            *names, not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1)
        )


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    service = ca.issue_cert("localhost", "127.0.0.1")
    client = ca.issue_cert("edge-gateway.internal", common_name="edge-gateway")
    files = {
        "ca.pem": ca.cert_pem,
        "other-ca.pem": other.cert_pem,
        "service.pem": service.cert_chain_pems[0],
        "service.key": service.private_key_pem,
        "client.pem": client.cert_chain_pems[0],
        "client.key": client.private_key_pem,
    }
    for name, blob in files.items():
        blob.write_to_path(str(directory / name))
    return Pki(
        ca=ca,
        ca_file=directory / "ca.pem",
        cert_file=directory / "service.pem",
        key_file=directory / "service.key",
        client_cert_file=directory / "client.pem",
        client_key_file=directory / "client.key",
        other_ca_file=directory / "other-ca.pem",
        service=service,
    )


@contextlib.asynccontextmanager
async def tls_backend(handler: RawHandler, ctx: ssl.SSLContext) -> AsyncIterator[int]:
    """A raw asyncio backend on loopback that speaks TLS with ``ctx``; yields its port."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
