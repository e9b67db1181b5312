"""Discovered instances of a service that sets ``tls`` are reached over TLS: DNS knows no scheme,
so what it finds is taken as ``https://``, never as a plaintext instance."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from dns_server import dns_server
from gateway_helpers import gateway, read_request
from upstream_tls_helpers import make_pki, tls_backend

from conftest import raw_http
from edgeway.gateway.upstream.discovery import as_https

SRV = "_https._tcp.orders.test."
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_instances_found_by_dns_are_reached_over_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    handshakes: list[object] = []

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        handshakes.append(w.get_extra_info("ssl_object"))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(r)
                w.write(OK)
                await w.drain()

    async with tls_backend(answer, pki.server_context()) as port:
        zone = {
            (SRV, "SRV"): (1, [f"0 10 {port} node1.orders.test."]),
            ("node1.orders.test.", "A"): (1, ["127.0.0.1"]),
        }
        async with dns_server(zone) as dns:
            cfg = {
                "name": "tls-discovery",
                "services": {
                    "orders": {
                        "discovery": {
                            "dns": {"name": SRV, "type": "SRV", "nameservers": [f"127.0.0.1:{dns.port}"]}
                        },
                        "tls": {"ca": str(pki.ca_file)},
                    }
                },
                "routes": [{"match": {"path": "/orders/**"}, "proxy": {"service": "orders"}}],
            }
            async with gateway(cfg) as (gport, _):
                out = await raw_http(gport, b"GET /orders/1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200"), out
    assert handshakes
    assert all(h is not None for h in handshakes)


def test_a_discovered_url_is_taken_as_https() -> None:
    assert as_https("http://10.0.0.5:8000") == "https://10.0.0.5:8000"
    assert as_https("https://10.0.0.5:8443") == "https://10.0.0.5:8443"
