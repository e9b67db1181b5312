"""Gateways sharing a strangler store agree on each rule's step: an operator's command on one
gateway, a scheduled advance and an automatic rollback decided by one are applied by the others
within a check interval. Through a file (the gateways of a host, or its workers) and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from strangler_helpers import Load, run_of, strangler_route, until
from traffic_helpers import Shadow, instances, running, servers

from conftest import require
from edgeway.gateway.process.serve import GatewayServer
from live_gateway import admin_once, gateway_config, ports, serving, write


def fleet_config(old: Shadow, new: Shadow, store: dict[str, Any], **rule: Any) -> dict[str, Any]:
    return {
        "services": {"old": instances(old), "new": instances(new)},
        "strangler_store": store,
        "routes": [strangler_route(**rule)],
    }


def stores(tmp_path: Path) -> list[dict[str, Any]]:
    return [{"backend": "file", "path": str(tmp_path / "strangler.json")}]


@pytest.fixture(params=["file", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "redis":
        require("redis")
        return {"backend": "redis", "key_prefix": f"edgeway-test:{uuid.uuid4().hex}:"}
    return {"backend": "file", "path": str(tmp_path / "strangler.json")}


async def test_two_gateways_sharing_a_store_follow_one_operators_commands(store: dict[str, Any]) -> None:
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        cfg = fleet_config(old, new, store, start="paused")
        async with running(cfg) as (_, one), running(cfg) as (_, two):
            first, second = run_of(one), run_of(two)
            await until(
                lambda: first.state is not None and second.state is not None, 5, "both read the store"
            )
            assert first.state is not None
            assert second.state is not None
            assert first.state.version == second.state.version  # one initial state, not two
            await first.command("advance")
            took = await until(lambda: second.percent == 10.0, 5, "the second gateway follows")
            await second.command("advance")
            await until(lambda: first.percent == 50.0, 5, "the first gateway follows")
            await first.command("rollback")
            await until(lambda: second.percent == 0.0, 5, "the rollback reaches the second")
            assert second.state is not None
            assert second.state.status == "rolled_back"
    assert took < 1.0  # within a few 50 ms check intervals


async def test_a_rollback_one_gateway_decides_moves_the_whole_fleet(store: dict[str, Any]) -> None:
    old, new = Shadow("old"), Shadow("new", status=500)
    async with servers(old, new):
        # Only the first gateway gets traffic: it sees the failures, the second follows its decision.
        cfg = fleet_config(old, new, store, steps=[50, 100])
        async with running(cfg) as (port, one), running(cfg) as (_, two), Load(port):
            first, second = run_of(one), run_of(two)
            await until(lambda: second.percent == 50.0, 5, "the second gateway at the first step")
            await until(lambda: first.percent == 0.0, 10, "the first gateway rolls back")
            await until(lambda: second.percent == 0.0, 5, "the second follows")
    assert second.state is not None
    assert second.state.status == "rolled_back"
    assert "error rate" in second.state.reason


async def test_a_changed_rule_starts_afresh_instead_of_taking_the_old_definitions_step(
    tmp_path: Path,
) -> None:
    old, new = Shadow("old"), Shadow("new")
    store = stores(tmp_path)[0]
    async with servers(old, new):
        async with running(fleet_config(old, new, store, start="paused")) as (_, gw):
            run = run_of(gw)
            await until(lambda: run.state is not None, 5, "the first check")
            await run.command("advance")
            await run.command("advance")
        async with running(fleet_config(old, new, store, start="paused", steps=[5, 100])) as (_, gw):
            run = run_of(gw)
            await until(lambda: run.state is not None, 5, "the first check")
            assert run.state is not None
            assert (run.state.step, run.percent, run.state.version) == (-1, 0.0, 4)


async def test_a_live_reload_keeps_the_rules_step_in_the_memory_store(tmp_path: Path) -> None:
    def strangler_of(server: GatewayServer) -> Any:
        return run_of(server.gateway)

    port, admin = ports()
    path = tmp_path / "gw.yaml"
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        services = {"old": instances(old), "new": instances(new)}
        write(path, gateway_config(port, admin, services, [strangler_route(start="paused")]))
        async with serving(path) as server:
            run = strangler_of(server)
            await until(lambda: run.state is not None, 5, "the first check")
            await run.command("advance")
            await run.command("advance")
            # Tighter limits, same definition (old, new, steps): the step stays.
            write(
                path, gateway_config(port, admin, services, [strangler_route(start="paused", min_requests=9)])
            )
            assert (await server.reload("api")).status == "applied"  # type: ignore[union-attr]
            after = strangler_of(server)
            assert after is not run
            await until(lambda: after.state is not None, 5, "the new generation's first check")
            assert after.state is not None
            assert (after.percent, after.state.step, after.state.status) == (50.0, 1, "paused")
            await asyncio.sleep(0.2)
            assert after.percent == 50.0


async def test_the_workers_of_one_gateway_apply_the_same_step(tmp_path: Path) -> None:
    port, admin = ports()
    path = tmp_path / "gw.yaml"
    old, new = Shadow("old"), Shadow("new")
    async with servers(old, new):
        config = gateway_config(
            port, admin, {"old": instances(old), "new": instances(new)}, [strangler_route(start="paused")]
        )
        config["strangler_store"] = {"backend": "file", "path": str(tmp_path / "strangler.json")}
        write(path, config)
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(path), "--workers", "2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        async def answers(count: int) -> dict[int, set[float]]:
            """The percent each worker reports over ``count`` fresh connections, by pid."""
            seen: dict[int, set[float]] = {}
            for _ in range(count):
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    response = await admin_once(admin, "GET", "/strangler")
                    if response.status == 200:
                        body = response.json()
                        seen.setdefault(body["pid"], set()).update(r["percent"] for r in body["rules"])
            return seen

        try:
            for _ in range(300):  # both workers up (the kernel spreads connections over them)
                if len(await answers(10)) == 2:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the two workers did not both answer")
            advanced = await admin_once(admin, "POST", "/strangler/profile/advance")  # to one worker
            assert advanced.status == 200
            await asyncio.sleep(0.3)  # a few of the rule's 50 ms checks
            seen = await answers(40)
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 15)
    assert len(seen) == 2
    assert all(percents == {10.0} for percents in seen.values()), seen
