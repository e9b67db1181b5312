"""The BFF profiles of examples/profiles: three gateways from one config tree, sharing services
and policies by ``include``; each loads, and serves its own tailored API."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from compose_helpers import JsonService, Reply, Seen, request, services
from typer.testing import CliRunner

from conftest import gateway_ports
from edgeway.gateway.config import GatewayConfig, load_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.config_cli import app as config_cli
from edgeway.http.listener import Listener, bind_socket

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ROOT / "examples" / "profiles"
NAMES = ("web", "mobile", "partner")

sys.path.insert(0, str(PROFILES))
import demo_services  # noqa: E402  (the example's services, served here by test servers)


def handler(service: str) -> Any:
    def answer(seen: Seen) -> Any:
        status, body = demo_services.answer(service, seen.path, seen.query)
        return Reply(status, body)

    return answer


@contextlib.asynccontextmanager
async def shop() -> AsyncIterator[dict[str, JsonService]]:
    async with services(**{name: handler(name) for name in demo_services.PORTS}) as running:
        yield running


def environment(running: dict[str, JsonService]) -> dict[str, str]:
    return {f"{name.upper()}_URL": svc.url for name, svc in running.items()}


@contextlib.asynccontextmanager
async def serve(config: GatewayConfig) -> AsyncIterator[int]:
    gw = Gateway(config, AccessLog(config.name, io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


@pytest.fixture(autouse=True)
def _from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    # The mobile profile's python.paths is relative to where the gateway starts: the repo root.
    monkeypatch.chdir(ROOT)


def test_every_profile_loads_and_shares_the_included_services() -> None:
    configs = {name: load_config(PROFILES / f"{name}.yaml", env={}) for name in NAMES}
    assert {c.name for c in configs.values()} == {"web-bff", "mobile-bff", "partner-api"}
    shared = {name: c.services for name, c in configs.items()}
    assert shared["web"] == shared["mobile"] == shared["partner"]
    assert set(shared["web"]) == {"catalog", "inventory", "reviews", "recommendations"}
    assert configs["mobile"].limits.max_body_bytes == 1024 * 1024  # from shared/policies.yaml
    ports = [p for c in configs.values() for p in (c.listen.port, c.admin.port if c.admin else 0)]
    assert len(set(ports)) == len(ports), "each profile is its own process on its own ports"
    # Each profile exposes its own API.
    paths = {name: sorted(r.match.path for r in c.routes) for name, c in configs.items()}
    assert paths == {
        "web": ["/api/catalog/**", "/products/{id}"],
        "mobile": ["/m/products/{id}", "/m/products/{id}/delivery"],
        "partner": ["/partner/v1/catalog/**", "/partner/v1/products/{id}"],
    }


def test_edgeway_config_check_accepts_every_profile() -> None:
    result = CliRunner().invoke(config_cli, ["check", *(str(PROFILES / f"{n}.yaml") for n in NAMES)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok: ") == 3


async def test_the_same_product_screen_is_tailored_per_client() -> None:
    async with shop() as running:
        env = environment(running)
        answers = {}
        for name, path in (
            ("web", "/products/2"),
            ("mobile", "/m/products/2"),
            ("partner", "/partner/v1/products/2"),
        ):
            async with serve(load_config(PROFILES / f"{name}.yaml", env=env)) as port:
                answers[name] = await request(port, "GET", path)
        async with serve(load_config(PROFILES / "mobile.yaml", env=env)) as port:
            delivery = await request(port, "GET", "/m/products/2/delivery?region=us")
            abroad = await request(port, "GET", "/m/products/2/delivery?region=eu")
            bad_region = await request(port, "GET", "/m/products/2/delivery?region=mars")
            missing = await request(port, "GET", "/m/products/99")
    web, mobile, partner = (answers[n].json() for n in NAMES)
    assert all(a.status == 200 for a in answers.values())
    assert "x-edgeway-completed" not in answers["web"].headers
    # Web: everything a large screen shows, the related products looked up in one batch.
    assert set(web) == {"product", "stock", "reviews", "related"}
    assert len(web["reviews"]["items"]) == 10
    assert [p["id"] for p in web["related"]] == [3, 4, 5]
    assert set(web["related"][0]) == {"id", "name", "price", "currency", "thumbnail"}
    # Mobile: a card, flat, a tenth of the bytes.
    assert mobile == {
        "id": 2,
        "name": "Teapot",
        "price": 24.5,
        "currency": "EUR",
        "thumbnail": "https://img.example/2/thumb.jpg",
        "in_stock": True,
        "rating": {"average": 4.0, "count": 12},
    }
    assert len(answers["mobile"].body) * 5 < len(answers["web"].body)
    # Partner: the contract's names; internal fields never leave any profile.
    assert partner["list_price"] == 24.5
    assert partner["in_stock"] is True
    for body in (answers[n].body for n in NAMES):
        assert b"internal" not in body
        assert b"supplier" not in body
    # The Python endpoint of the mobile profile.
    assert delivery.json() == {"available": True, "ships_from": "us-1", "days": 2}
    assert abroad.json() == {"available": True, "ships_from": "us-1", "days": 6}
    assert bad_region.status == 400
    assert bad_region.json()["region"] == "mars"
    assert missing.status == 404
    assert missing.json()["detail"] == "nothing at /products/99"


async def test_edgeway_gateway_runs_the_mobile_profile_as_a_process() -> None:
    async with shop() as running:
        env = {
            **os.environ,
            **environment(running),
            "MOBILE_PORT": "0",  # free ports, reported in the "gateway listening" line
            "MOBILE_ADMIN_PORT": "0",
        }
        script = Path(sys.executable).with_name("edgeway")
        proc = subprocess.Popen(
            [str(script), "gateway", "--config", "examples/profiles/mobile.yaml"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            port, _ = await asyncio.to_thread(gateway_ports, proc.stdout)
            card = await request(port, "GET", "/m/products/1")
            delivery = await request(port, "GET", "/m/products/1/delivery")
        finally:
            proc.terminate()
            _, err = await asyncio.to_thread(proc.communicate, None, 10)
    assert proc.returncode == 0, err.decode()
    assert card.json()["name"] == "Kettle"
    assert delivery.json() == {"available": True, "ships_from": "eu-1", "days": 2}
