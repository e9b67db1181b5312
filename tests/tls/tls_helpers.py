"""What the TLS tests share: certificates from throwaway CAs (trustme), a gateway served from a
config file in-process with an HTTPS listener, a backend that echoes the headers it got, and
TLS clients over real sockets (asyncio streams, or hand-written ClientHellos for what no modern
client library still sends).

The tests run on uvloop, the event loop a gateway process runs on (``serve`` installs it), so
its TLS transport is the one tested: a module imports :func:`event_loop_policy` to get it (a
conftest.py here would shadow the shared ``conftest`` module the tests import helpers from).
``test_tls_asyncio_loop.py`` runs a test on asyncio's own loop, for embedders without uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gateway_helpers import backend, read_request

from edgeway.gateway.config import load_config
from edgeway.gateway.process.serve import GatewayServer
from edgeway.pki.local_ca import LocalCA


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """pytest-asyncio's hook: the loop the importing module's tests run on."""
    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


@dataclass(frozen=True)
class Pair:
    """A certificate and key written to files."""

    cert: Path
    key: Path

    def entry(self, **extra: Any) -> dict[str, Any]:
        return {"cert": str(self.cert), "key": str(self.key), **extra}


def write_pair(directory: Path, name: str, leaf: trustme.LeafCert) -> Pair:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return Pair(cert, key)


class Pki:
    """A server CA with certificates for loopback, one name and a wildcard, and a client CA
    with a client certificate; files under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.ca_file = directory / "ca.pem"
        directory.mkdir(parents=True, exist_ok=True)
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.loopback = write_pair(directory, "loopback", self.ca.issue_cert("localhost", "127.0.0.1", "::1"))
        self.api = write_pair(directory, "api", self.ca.issue_cert("api.example.com"))
        self.wildcard = write_pair(directory, "wildcard", self.ca.issue_cert("*.apps.example.com"))
        # Client certificates come from edgeway's own CA code: trustme cannot write URI names.
        self.client_ca = LocalCA.create("Partners CA", constrained=False)
        self.client_ca_file, _ = self.client_ca.write(directory / "clients")
        self.client = self.client_cert("partner-a", "partner-a.example", "spiffe://acme/partner-a")
        # The same name from a CA the gateway does not trust.
        self.stranger = self.client_cert(
            "partner-a", "partner-a.example", authority=LocalCA.create("Other CA", constrained=False)
        )

    def issue(self, name: str, *names: str, **options: Any) -> Pair:
        return write_pair(self.directory, name, self.ca.issue_cert(*names, **options))

    def client_cert(self, common_name: str, *names: str, authority: LocalCA | None = None) -> Pair:
        issued = (authority or self.client_ca).issue(
            names, server=False, client=True, common_name=common_name, organization="Acme"
        )
        pair = Pair(
            self.directory / f"client-{common_name}-{id(issued)}.pem",
            self.directory / f"client-{id(issued)}.key",
        )
        issued.write(pair.cert, pair.key)
        return pair

    def client_context(self, client: Pair | None = None) -> ssl.SSLContext:
        """A modern client trusting the server CA, presenting ``client`` if given."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        ctx.set_alpn_protocols(["http/1.1"])
        if client is not None:
            ctx.load_cert_chain(client.cert, client.key)
        return ctx


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_extensions(
    builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey, path_length: int
) -> Any:
    return (
        builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def chained_pki(directory: Path, names: dict[str, Sequence[str]]) -> tuple[Path, dict[str, Pair]]:
    """A root, an intermediate it signed and, per entry of ``names``, a server certificate the
    intermediate signed (the file: the certificate, then the intermediate), all RFC 5280-strict
    (trustme marks subjectAltName critical, which strict verifiers refuse). Returns the root's
    file and the pairs by name."""
    now = datetime.datetime.now(datetime.UTC)

    def builder(subject: str, issuer: str, public: Any) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
        )

    root_key, mid_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = _ca_extensions(builder("Scan Root", "Scan Root", root_key.public_key()), root_key, 1).sign(
        root_key, hashes.SHA256()
    )
    mid = (
        _ca_extensions(builder("Scan Intermediate", "Scan Root", mid_key.public_key()), mid_key, 0)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    directory.mkdir(parents=True, exist_ok=True)
    root_file = directory / "root.pem"
    root_file.write_bytes(root.public_bytes(pem))
    pairs: dict[str, Pair] = {}
    for name, sans in names.items():
        key = ec.generate_private_key(ec.SECP256R1())
        general: list[x509.GeneralName] = []
        for san in sans:
            try:
                general.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                general.append(x509.DNSName(san))
        leaf = (
            builder(sans[0], "Scan Intermediate", key.public_key())
            .add_extension(x509.SubjectAlternativeName(general), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_usage(ca=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(mid_key.public_key()), critical=False
            )
            .sign(mid_key, hashes.SHA256())
        )
        pair = pairs[name] = Pair(directory / f"{name}.pem", directory / f"{name}.key")
        pair.cert.write_bytes(leaf.public_bytes(pem) + mid.public_bytes(pem))
        pair.key.write_bytes(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return root_file, pairs


def expired(ca: trustme.CA, *names: str) -> trustme.LeafCert:
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    return ca.issue_cert(*names, not_before=past, not_after=past + datetime.timedelta(days=30))


# --------------------------------------------------------------------------- the gateway


def tls_config(
    backend_port: int,
    tls: dict[str, Any],
    *,
    routes: Sequence[dict[str, Any]] | None = None,
    listen: dict[str, Any] | None = None,
    **top: Any,
) -> dict[str, Any]:
    return {
        "name": "tls-gw",
        "listen": {"host": "127.0.0.1", "port": 0, "tls": tls, **(listen or {})},
        "admin": None,
        "access_log": {"enabled": False},
        "reload": {"watch": False},
        "services": {"echo": {"instances": [f"http://127.0.0.1:{backend_port}"]}},
        "routes": list(routes)
        if routes is not None
        else [{"match": {"path": "/**"}, "proxy": {"service": "echo"}}],
        **top,
    }


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML


@contextlib.asynccontextmanager
async def serving(path: Path) -> AsyncIterator[GatewayServer]:
    sources: list[str] = []
    server = GatewayServer(load_config(path, sources=sources), path, sources=sources)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()


@contextlib.asynccontextmanager
async def echo_backend() -> AsyncIterator[int]:
    """Answers every request with the headers it received, as JSON (lower-case names; a
    repeated name's values joined with ', ')."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                line, headers, _ = await read_request(r)
                body = json.dumps(
                    {"line": line.decode(), "headers": {k.decode(): v.decode() for k, v in headers.items()}}
                ).encode()
                w.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                    % (len(body), body)
                )
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async with backend(handle) as port:
        yield port


# --------------------------------------------------------------------------- clients


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpsClient:
    """One keep-alive HTTP/1.1 connection over TLS (responses carry Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, ctx: ssl.SSLContext, server_hostname: str | None = "localhost"
    ) -> HttpsClient:
        if server_hostname is None:
            ctx.check_hostname = False
        r, w = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname=server_hostname or "", ssl_handshake_timeout=10
        )
        return cls(r, w)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        found: ssl.SSLObject = self.writer.get_extra_info("ssl_object")
        return found

    def peer_names(self) -> list[str]:
        """The subjectAltName values of the certificate the server presented."""
        cert = self.ssl_object.getpeercert() or {}
        entries: Any = cert.get("subjectAltName", ())
        return [str(entry[1]) for entry in entries]

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, host: str = "localhost"
    ) -> Reply:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode())
        async with asyncio.timeout(10):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *rest = head.decode("latin-1").split("\r\n")
            got: dict[str, str] = {}
            for line in rest:
                if line:
                    k, v = line.split(":", 1)
                    got[k.strip().lower()] = v.strip()
            body = await self.reader.readexactly(int(got.get("content-length", "0")))
        return Reply(int(status_line.split()[1]), got, body)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self.writer.wait_closed()


async def https_get(
    port: int,
    ctx: ssl.SSLContext,
    path: str = "/",
    *,
    server_hostname: str | None = "localhost",
    headers: dict[str, str] | None = None,
) -> tuple[Reply, list[str]]:
    """One request on a new connection: the reply and the names of the served certificate."""
    client = await HttpsClient.connect(port, ctx, server_hostname)
    try:
        return await client.request("GET", path, headers), client.peer_names()
    finally:
        await client.close()


async def refused_handshake(port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost") -> str:
    """Connect with ``ctx`` and return why the TLS connection failed; fails the test if it works
    (TLS 1.3 reports a refused client certificate only at the first read: a request is sent).
    asyncio's TLS transport closes a refused handshake without sending the alert OpenSSL made,
    so the reason is often a reset rather than the alert's name."""
    try:
        client = await HttpsClient.connect(port, ctx, server_hostname)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        reply = await client.request("GET", "/")
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.close()
    raise AssertionError(f"the connection was served: {reply.status}")


# --------------------------------------------------------------------------- raw ClientHellos

TLS10, TLS11, TLS12 = 0x0301, 0x0302, 0x0303
# A cipher the gateway serves (ECDHE-ECDSA-AES128-GCM-SHA256) and weak ones it must refuse.
GOOD_CIPHER = 0xC02B
WEAK_CIPHERS = {
    "RSA key exchange, AES-CBC (TLS_RSA_WITH_AES_128_CBC_SHA)": 0x002F,
    "RSA key exchange, AES-GCM (TLS_RSA_WITH_AES_128_GCM_SHA256)": 0x009C,
    "3DES (TLS_RSA_WITH_3DES_EDE_CBC_SHA)": 0x000A,
    "RC4 (TLS_RSA_WITH_RC4_128_SHA)": 0x0005,
    "ECDHE with CBC (TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA)": 0xC009,
    "ECDHE with CBC-SHA256 (TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256)": 0xC023,
    "NULL cipher (TLS_ECDHE_ECDSA_WITH_NULL_SHA)": 0xC006,
    "anonymous (TLS_ECDH_anon_WITH_AES_128_CBC_SHA)": 0xC018,
    "export (TLS_RSA_EXPORT_WITH_RC4_40_MD5)": 0x0003,
    "finite-field DHE (TLS_DHE_RSA_WITH_AES_128_GCM_SHA256)": 0x009E,
}


def _extension(kind: int, data: bytes) -> bytes:
    return struct.pack("!HH", kind, len(data)) + data


def client_hello(
    version: int, ciphers: Sequence[int], *, server_name: str = "localhost", compression: bytes = b"\x00"
) -> bytes:
    """A TLS ClientHello record, as any client could write it."""
    name = server_name.encode()
    sni = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    groups = struct.pack("!H", 4) + struct.pack("!HH", 0x001D, 0x0017)  # x25519, secp256r1
    sigalgs_list = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
    sigalgs = struct.pack("!H", 2 * len(sigalgs_list)) + b"".join(struct.pack("!H", s) for s in sigalgs_list)
    extensions = (
        _extension(0x0000, sni)
        + _extension(0x000A, groups)
        + _extension(0x000B, b"\x01\x00")  # ec_point_formats: uncompressed
        + _extension(0x000D, sigalgs)
        + _extension(0xFF01, b"\x00")  # renegotiation_info (empty: an initial handshake)
    )
    suites = b"".join(struct.pack("!H", c) for c in ciphers)
    body = (
        struct.pack("!H", version)
        + bytes(32)  # random: zeros are fine for a hello the server refuses or answers once
        + b"\x00"  # no session id
        + struct.pack("!H", len(suites))
        + suites
        + bytes([len(compression)])
        + compression
        + struct.pack("!H", len(extensions))
        + extensions
    )
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + struct.pack("!HH", TLS10, len(handshake)) + handshake


@dataclass(frozen=True)
class HelloAnswer:
    """The first record the server sent back, or nothing (it closed)."""

    record_type: int | None  # 0x16 handshake, 0x15 alert; None: closed without a record
    alert: int | None = None  # the alert description: 70 protocol_version, 40 handshake_failure
    server_version: int | None = None
    cipher: int | None = None
    compression: int | None = None


async def send_hello(port: int, hello: bytes) -> HelloAnswer:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(hello)
        async with asyncio.timeout(10):
            try:
                header = await r.readexactly(5)
            except (asyncio.IncompleteReadError, ConnectionError):
                return HelloAnswer(None)
            record_type, _, length = struct.unpack("!BHH", header)
            payload = await r.readexactly(length)
    finally:
        w.close()
    if record_type == 0x15:
        return HelloAnswer(record_type, alert=payload[1])
    if record_type == 0x16 and payload[0] == 0x02:  # ServerHello
        version = struct.unpack("!H", payload[4:6])[0]
        sid_len = payload[38]
        at = 39 + sid_len
        cipher = struct.unpack("!H", payload[at : at + 2])[0]
        return HelloAnswer(record_type, server_version=version, cipher=cipher, compression=payload[at + 2])
    return HelloAnswer(record_type)
