"""A gateway process served in-process (``GatewayServer``, as ``edgeway gateway`` runs it) with
``listen.http2``, plaintext or TLS, in front of an HTTP/1.1 backend that echoes what it got."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import trustme
from gateway_helpers import backend, read_request

from edgeway.gateway.config import load_config
from edgeway.gateway.process.serve import GatewayServer


@contextlib.asynccontextmanager
async def echo_backend(seen: list[bytes] | None = None) -> AsyncIterator[int]:
    """Answers every request with its request line, headers and body as JSON; ``/slow`` after
    half a second, ``/big`` with 1 MiB. ``seen``: gets each request line."""

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                line, headers, body = await read_request(r)
                if seen is not None:
                    seen.append(line)
                if b" /slow" in line:
                    await asyncio.sleep(0.5)
                if b" /big" in line:
                    payload = b"x" * (1024 * 1024)
                else:
                    payload = json.dumps(
                        {
                            "line": line.decode(),
                            "headers": {k.decode(): v.decode() for k, v in headers.items()},
                            "body": body.decode(),
                        }
                    ).encode()
                w.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Backend: yes\r\n"
                    b"content-length: %d\r\n\r\n%b" % (len(payload), payload)
                )
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    async with backend(handle) as port:
        yield port


class Certificates:
    """A throwaway CA and a certificate for localhost / 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA()
        leaf = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        self.key.write_bytes(leaf.private_key_pem.bytes())

    def client_context(self, alpn: list[str]) -> Any:
        import ssl

        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        ctx.set_alpn_protocols(alpn)
        return ctx


def gateway_config(
    backend_port: int,
    *,
    tls: Certificates | None = None,
    http2: bool = True,
    limits: dict[str, Any] | None = None,
    routes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    listen: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "http2": http2}
    if tls is not None:
        listen["tls"] = {"certificates": [{"cert": str(tls.cert), "key": str(tls.key)}]}
    return {
        "name": "h2-gw",
        "listen": listen,
        "admin": None,
        "access_log": {"enabled": False},
        "reload": {"watch": False},
        "limits": limits or {},
        "services": {"echo": {"instances": [f"http://127.0.0.1:{backend_port}"]}},
        "routes": routes
        if routes is not None
        else [{"match": {"path": "/**"}, "proxy": {"service": "echo"}}],
    }


@contextlib.asynccontextmanager
async def serving(directory: Path, config: dict[str, Any]) -> AsyncIterator[GatewayServer]:
    path = directory / "gw.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    sources: list[str] = []
    server = GatewayServer(load_config(path, sources=sources), path, sources=sources)
    await server.start()
    try:
        yield server
    finally:
        await server.shutdown()
