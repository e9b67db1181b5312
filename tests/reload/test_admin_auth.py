"""The admin API's access rules over real sockets: a token on everything but the probes, no
cross-origin or non-JSON writes, no foreign Host (DNS rebinding), a generated token for a loopback
admin API that clients find, and no start beyond loopback without a token."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.gateway.process.admin_auth import TOKEN_ENV, find_token, token_path
from edgeway.gateway.process.reload import ReloadRefused, request_reload
from edgeway.gateway.process.serve import GatewayServer
from live_gateway import backends, gateway_config, ports, route, service, serving, write


async def raw(port: int, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


@asynccontextmanager
async def admin_gateway(tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        write(cfg, gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")]))
        async with serving(cfg) as server:
            yield admin, server.admin_token


def request(admin: int, method: str, path: str, *extra: str, host: str | None = None) -> str:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{admin}'}", "Connection: close"]
    return "\n".join([*lines, *extra, "Content-Length: 0", ""])


async def test_every_endpoint_but_the_probes_needs_the_token(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as (admin, token):
        for path in ("/routes", "/metrics"):
            status, headers, body = await raw(admin, request(admin, "GET", path))
            assert status == 401, path
            assert headers["www-authenticate"].startswith("Bearer")
            assert headers["content-type"] == "application/problem+json"
        wrong = await raw(admin, request(admin, "GET", "/routes", "Authorization: Bearer not-it"))
        assert wrong[0] == 401
        status, _, body = await raw(admin, request(admin, "GET", "/routes", f"Authorization: Bearer {token}"))
        assert status == 200
        assert "routes" in json.loads(body)
        # A text/plain POST /reload, as a cross-origin form sends it, does nothing without the token.
        status, _, _ = await raw(admin, request(admin, "POST", "/reload", "Content-Type: text/plain"))
        assert status == 401
        health = await raw(admin, request(admin, "GET", "/healthz"))
        assert health[0] == 200
        ready_status, _, ready = await raw(admin, request(admin, "GET", "/readyz"))
        assert ready_status == 200
        assert json.loads(ready) == {"status": "ready"}  # the detail is for token holders
        _, _, detailed = await raw(admin, request(admin, "GET", "/readyz", f"Authorization: Bearer {token}"))
        assert "services" in json.loads(detailed)


async def test_writes_must_be_json_and_not_cross_origin(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as (admin, token):
        auth = f"Authorization: Bearer {token}"
        plain = await raw(admin, request(admin, "POST", "/reload", auth, "Content-Type: text/plain"))
        assert plain[0] == 415
        bare = await raw(admin, request(admin, "POST", "/reload", auth))
        assert bare[0] == 415
        origin = await raw(
            admin,
            request(
                admin, "POST", "/reload", auth, "Content-Type: application/json", "Origin: http://evil.test"
            ),
        )
        assert origin[0] == 403
        site = await raw(
            admin,
            request(
                admin, "POST", "/reload", auth, "Content-Type: application/json", "Sec-Fetch-Site: cross-site"
            ),
        )
        assert site[0] == 403
        ok = await raw(admin, request(admin, "POST", "/reload", auth, "Content-Type: application/json"))
        assert ok[0] == 200
        assert json.loads(ok[2])["status"] in ("applied", "unchanged")


async def test_a_foreign_host_is_refused_even_with_the_token(tmp_path: Path) -> None:
    async with admin_gateway(tmp_path) as (admin, token):
        auth = f"Authorization: Bearer {token}"
        rebound = await raw(admin, request(admin, "GET", "/routes", auth, host=f"attacker.test:{admin}"))
        assert rebound[0] == 421
        probe = await raw(admin, request(admin, "GET", "/healthz", host="attacker.test"))
        assert probe[0] == 421
        for host in (f"localhost:{admin}", "127.0.0.1", f"[::1]:{admin}", "10.1.2.3:80"):
            assert (await raw(admin, request(admin, "GET", "/routes", auth, host=host)))[0] == 200, host


async def test_a_generated_token_is_written_for_clients_and_removed_after(tmp_path: Path) -> None:
    assert TOKEN_ENV not in os.environ
    async with admin_gateway(tmp_path) as (admin, token):
        path = token_path(admin)
        assert path.read_text().strip() == token
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert find_token(admin) == token
        # request_reload (and so every edgeway tool) finds it by the port.
        assert (await request_reload("127.0.0.1", admin))["status"] in ("applied", "unchanged")
        with pytest.raises(ReloadRefused) as refused:
            await request_reload("127.0.0.1", admin, token="guess")
        assert refused.value.status == 401
    assert not path.exists()


async def test_the_token_comes_from_token_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, admin = ports()
    secret = tmp_path / "admin.token"
    secret.write_text("from-the-file\n")
    cfg = gateway_config(port, admin, {}, [])
    cfg["admin"]["token_file"] = str(secret)
    server = GatewayServer(validate_config(cfg))
    assert server.admin_token == "from-the-file"
    monkeypatch.setenv(TOKEN_ENV, "from-the-env")
    assert GatewayServer(validate_config(gateway_config(port, admin, {}, []))).admin_token == "from-the-env"


def test_an_admin_api_beyond_loopback_without_a_token_does_not_start() -> None:
    cfg = gateway_config(8080, 8081, {}, [])
    cfg["admin"] = {"host": "0.0.0.0", "port": 8081}
    with pytest.raises(ConfigError, match="beyond loopback"):
        GatewayServer(validate_config(cfg))


async def test_beyond_loopback_with_a_token_it_starts_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "a-real-secret")
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    config = gateway_config(port, admin, {}, [])
    config["admin"] = {"host": "0.0.0.0", "port": admin}
    config["access_log"] = {"enabled": True}
    write(cfg, config)
    async with serving(cfg):
        status, _, _ = await raw(
            admin, request(admin, "GET", "/routes", "Authorization: Bearer a-real-secret")
        )
    assert status == 200
    assert "the admin API listens beyond loopback" in capsys.readouterr().out
