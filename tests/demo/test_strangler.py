"""The demo's strangler switch: the flag resumes or rolls back the edges' progressive strangler
through their admin API, and the edges share the rule's state through the file it writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from aiohttp import web

from edgeway.demo.strangler import StranglerController, render, write_if_changed
from edgeway.gateway.config import load_config
from edgeway.service import Flags

FLAG = "flags.strangler.account-profile"


def test_the_file_names_the_shared_strangler_store(tmp_path: Path) -> None:
    state = tmp_path / "strangler-state.json"
    assert yaml.safe_load(render(state)) == {"strangler_store": {"backend": "file", "path": str(state)}}


def test_write_if_changed_leaves_an_identical_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    assert write_if_changed(path, "a: 1\n")
    before = path.stat().st_mtime_ns
    assert not write_if_changed(path, "a: 1\n")
    assert path.stat().st_mtime_ns == before
    assert write_if_changed(path, "a: 2\n")
    assert path.read_text() == "a: 2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]  # no temporary file left behind


async def test_the_flag_resumes_and_rolls_back_the_rule_on_one_edge(tmp_path: Path) -> None:
    commands: list[str] = []

    async def partner_gateway(request: web.Request) -> web.Response:
        return web.json_response({"status": 404}, status=404)  # routes no account page

    async def edge(request: web.Request) -> web.Response:
        # What the gateway's admin API requires of a write (admin_auth): the token, as JSON.
        if request.headers.get("authorization") != "Bearer demo-token":
            return web.json_response({"status": 401}, status=401)
        if request.headers.get("content-type") != "application/json":
            return web.json_response({"status": 415}, status=415)
        commands.append(request.path)
        return web.json_response({"status": "running", "percent": 10.0, "reason": "resumed"})

    runners = []
    bases = []
    for handler in (partner_gateway, edge, edge):
        app = web.Application()
        app.router.add_post("/strangler/{route}/{command}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        bases.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        path = tmp_path / "strangler.yaml"
        controller = StranglerController(
            path,
            tmp_path / "state.json",
            flags=Flags({FLAG: False}),
            admin_urls=bases,
            admin_token="demo-token",
        )
        stop = asyncio.Event()
        task = asyncio.create_task(controller.run(stop))
        async with asyncio.timeout(10):
            while not path.exists():
                await asyncio.sleep(0.02)
        assert str(tmp_path / "state.json") in path.read_text()
        await asyncio.sleep(0.1)
        assert commands == []  # the flag is off and the rule starts paused: nothing to say

        controller.flags = Flags({FLAG: True})
        controller.notify(FLAG, True)
        async with asyncio.timeout(10):
            while not commands:
                await asyncio.sleep(0.02)
        # one edge took it (they share the rule's state): the partner gateway's 404 was skipped
        assert commands == ["/strangler/account-profile/resume"]
        assert await controller.apply() == []  # nothing changed, nobody is bothered
        controller.notify("flags.payments.fail", True)  # not a strangler flag: ignored
        controller.flags = Flags({FLAG: False})
        controller.notify(FLAG, False)
        async with asyncio.timeout(10):
            while len(commands) < 2:
                await asyncio.sleep(0.02)
        assert commands == ["/strangler/account-profile/resume", "/strangler/account-profile/rollback"]
        stop.set()
        await asyncio.wait_for(task, 2)
    finally:
        for runner in runners:
            await runner.cleanup()


def test_both_edges_route_the_account_page_with_one_shared_strangler_rule(tmp_path: Path) -> None:
    from edgeway.demo.plan import EDGES_DIR

    path = tmp_path / "strangler.yaml"
    write_if_changed(path, render(tmp_path / "state.json"))
    rules = []
    for edge in ("web-bff", "mobile-bff"):
        config = load_config(EDGES_DIR / f"{edge}.yaml", env={"SHOP_STRANGLER_FILE": str(path)})
        assert config.strangler_store.path == str(tmp_path / "state.json")
        route = next(r for r in config.routes if r.id == "account-profile")
        assert route.proxy is not None
        assert route.proxy.strangler is not None
        rules.append(route.proxy.strangler)
    assert rules[0] == rules[1]  # the same rule: one state, both edges move together
    assert (rules[0].old, rules[0].new, rules[0].start) == ("legacy", "profile", "paused")
