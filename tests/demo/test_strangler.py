"""The strangler controller: the flag picks the implementation, the file changes only when the
target does, and the gateways are asked to reload each time it changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from aiohttp import web

from edgeway.demo.strangler import StranglerController, render, write_if_changed
from edgeway.gateway.config import load_config
from edgeway.service import Flags

URLS = {"legacy": "http://127.0.0.1:8108", "profile": "http://127.0.0.1:8107"}


def test_the_file_names_one_instance_per_strangled_service() -> None:
    text = render({"account-profile": URLS["profile"]})
    assert yaml.safe_load(text) == {"services": {"account-profile": {"instances": [URLS["profile"]]}}}


def test_write_if_changed_leaves_an_identical_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    assert write_if_changed(path, "a: 1\n")
    before = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a: 1\n")
    assert path.stat().st_mtime_ns == before
    assert write_if_changed(path, "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]  # no temporary file left behind


async def test_flag_on_moves_the_route_and_asks_every_gateway_to_reload(tmp_path: Path) -> None:
    reloads: list[str] = []

    async def reload(request: web.Request) -> web.Response:
        # What the gateway's admin API requires of a reload (admin_auth): the token, as JSON.
        if request.headers.get("authorization") != "Bearer demo-token":
            return web.json_response({"status": 401}, status=401)
        if request.headers.get("content-type") != "application/json":
            return web.json_response({"status": 415}, status=415)
        reloads.append(request.path)
        return web.json_response({"status": "applied"})

    app = web.Application()
    app.router.add_post("/reload", reload)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        path = tmp_path / "strangler.yaml"
        controller = StranglerController(
            path,
            URLS,
            flags=Flags({"flags.strangler.account-profile": False}),
            reload_urls=[f"http://127.0.0.1:{port}/reload"] * 2,
            admin_token="demo-token",
        )
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        async with asyncio.timeout(10):
            while not path.exists():
                await asyncio.sleep(0.02)
        assert URLS["legacy"] in path.read_text()
        assert reloads == []  # the first file is written before any gateway runs

        controller.flags = Flags({"flags.strangler.account-profile": True})
        controller.notify("flags.strangler.account-profile", True)
        async with asyncio.timeout(10):
            while len(reloads) < 2:
                await asyncio.sleep(0.02)
        assert URLS["profile"] in path.read_text()
        assert not await controller.apply()  # nothing changed, nobody is bothered
        controller.notify("flags.payments.fail", True)  # not a strangler flag: ignored
        await asyncio.sleep(0.1)
        assert len(reloads) == 2
        stop.set()
        await asyncio.wait_for(task, 2)
    finally:
        await runner.cleanup()


def test_the_edges_route_the_strangled_path_to_the_file_s_service(tmp_path: Path) -> None:
    from edgeway.demo.plan import EDGES_DIR

    path = tmp_path / "strangler.yaml"
    write_if_changed(path, render({"account-profile": URLS["profile"]}))
    config = load_config(EDGES_DIR / "web-bff.yaml", env={"SHOP_STRANGLER_FILE": str(path)})
    assert config.services["account-profile"].instances == [URLS["profile"]]
    route = next(r for r in config.routes if r.id == "account-profile")
    assert route.proxy is not None
    assert route.proxy.service == "account-profile"
