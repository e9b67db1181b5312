"""The plaintext listener of ``listen.http_redirect``: 308 to the same host, path and query on
the HTTPS port; never a redirect to a host the gateway does not serve, whatever the Host header
or the request target say."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tls_helpers import (
    Pki,
    echo_backend,
    event_loop_policy,  # noqa: F401  (these tests run on uvloop)
    serving,
    tls_config,
    write_config,
)

from conftest import raw_http
from edgeway.gateway.process.serve import GatewayServer


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


async def redirecting(tmp_path: Path, pki: Pki, **redirect: Any) -> AsyncIterator[GatewayServer]:
    async with echo_backend() as port:
        tls = {"certificates": [pki.loopback.entry(), pki.wildcard.entry()], "hsts": {"max_age": 60}}
        path = tmp_path / "gw.yaml"
        write_config(path, tls_config(port, tls, listen={"http_redirect": {"port": 0, **redirect}}))
        async with serving(path) as server:
            yield server


@pytest.fixture
async def gateway(tmp_path: Path, pki: Pki) -> AsyncIterator[GatewayServer]:
    async for server in redirecting(tmp_path, pki):
        yield server


def redirect_port(server: GatewayServer) -> int:
    assert server.redirect is not None
    return server.redirect.port


async def ask(server: GatewayServer, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    raw = await raw_http(redirect_port(server), head.replace("\n", "\r\n").encode() + b"\r\n" + body, wait=5)
    top, _, rest = raw.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def get(target: str, host: str | None) -> str:
    host_line = f"Host: {host}\n" if host is not None else ""
    return f"GET {target} HTTP/1.1\n{host_line}Connection: close\n"


@pytest.mark.parametrize(
    ("host", "target", "authority"),
    [
        ("localhost", "/a/b?c=d&e", "localhost"),
        ("LocalHost.:8080", "/", "localhost"),  # the name as certificates compare it; the port is ours
        ("127.0.0.1:80", "/x", "127.0.0.1"),
        ("[::1]", "/x", "[::1]"),
        ("shop.apps.example.com", "/cart", "shop.apps.example.com"),  # by the wildcard certificate
    ],
)
async def test_redirects_to_the_same_host_and_target_on_the_https_port(
    gateway: GatewayServer, host: str, target: str, authority: str
) -> None:
    status, headers, _ = await ask(gateway, get(target, host))
    assert status == 308
    assert headers["location"] == f"https://{authority}:{gateway.port}{target}"
    assert "strict-transport-security" not in headers  # HSTS over plaintext means nothing


async def test_a_post_is_redirected_with_308_so_the_client_repeats_it(gateway: GatewayServer) -> None:
    status, headers, _ = await ask(
        gateway, "POST /orders HTTP/1.1\nHost: localhost\nContent-Length: 5\nConnection: close\n", b"hello"
    )
    assert status == 308
    assert headers["location"] == f"https://localhost:{gateway.port}/orders"


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:443",
        "localhost.evil.example",
        "a.b.apps.example.com",  # the wildcard covers one label
        "apps.example.com",
        "localhost@evil.example",
        "evil.example%2flocalhost",
        "[::2]",
        "127.0.0.2",
        "",
    ],
)
async def test_a_host_the_gateway_does_not_serve_gets_no_redirect(gateway: GatewayServer, host: str) -> None:
    status, headers, _ = await ask(gateway, get("/", host))
    assert status in (400, 421), status
    assert "location" not in headers


async def test_http_1_0_without_host_gets_no_redirect(gateway: GatewayServer) -> None:
    status, headers, _ = await ask(gateway, "GET / HTTP/1.0\n")
    assert status == 421
    assert "location" not in headers


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "/%2F%2Fevil.example"])
async def test_the_target_cannot_move_the_redirect_to_another_host(
    gateway: GatewayServer, target: str
) -> None:
    status, headers, _ = await ask(gateway, get(target, "localhost"))
    assert status == 308
    assert headers["location"] == f"https://localhost:{gateway.port}{target}"


async def test_an_absolute_form_target_naming_another_host_is_refused(gateway: GatewayServer) -> None:
    status, headers, _ = await ask(gateway, get("http://evil.example/", "localhost"))
    assert status == 400
    assert "location" not in headers


async def test_https_port_and_hosts_are_configurable(tmp_path: Path, pki: Pki) -> None:
    async for server in redirecting(tmp_path, pki, https_port=443, hosts=["*.example.com", "example.com"]):
        status, headers, _ = await ask(server, get("/x", "www.example.com:8080"))
        assert (status, headers["location"]) == (308, "https://www.example.com/x")  # 443: no port
        status, headers, _ = await ask(server, get("/x", "example.com"))
        assert (status, headers["location"]) == (308, "https://example.com/x")
        status, headers, _ = await ask(server, get("/x", "localhost"))  # not listed: not redirected
        assert status == 421
