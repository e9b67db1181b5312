"""The admin API's traffic endpoints on a real admin listener: the credential on every one, no
cross-origin writes, the strangler's state and commands, splits, breakers, instances, and a
drain that takes an instance out of balancing while its request in flight finishes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from strangler_helpers import run_of, strangler_route, until
from traffic_helpers import Client, Shadow, answers, instances, running, servers

from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.admin import AdminHandler
from edgeway.gateway.process.admin_auth import AdminGuard
from edgeway.http.listener import Listener, bind_socket

TOKEN = "traffic-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WRITE = {**AUTH, "Content-Type": "application/json"}


@contextlib.asynccontextmanager
async def admin(gw: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    listener = Listener(AdminHandler(gw, AdminGuard(TOKEN)), gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}", timeout=10) as http:
            yield http
    finally:
        await listener.shutdown(1.0)


def config(old: Shadow, new: Shadow, a: Shadow, b: Shadow) -> dict[str, Any]:
    breaker = {"service": {"failure_rate": 0.5}, "instance": {"consecutive_failures": 5}}
    return {
        "services": {
            "old": instances(old),
            "new": instances(new),
            "pool": instances(a, b, breaker=breaker),
        },
        "routes": [
            strangler_route(steps=[20, 100], start="paused"),
            {"id": "pool", "match": {"path": "/pool/**"}, "proxy": {"service": "pool"}},
        ],
    }


async def test_every_traffic_endpoint_needs_the_credential_and_writes_refuse_other_origins() -> None:
    old, new, a, b = Shadow("old"), Shadow("new"), Shadow("a"), Shadow("b")
    async with servers(old, new, a, b), running(config(old, new, a, b)) as (_, gw), admin(gw) as http:
        for path in ("/splits", "/strangler", "/breakers", "/instances"):
            assert (await http.get(path)).status_code == 401, path
        for path in ("/strangler/profile/advance", "/instances/drain"):
            refused = await http.post(path, json={"service": "pool", "instance": a.url})
            assert refused.status_code == 401, path
            cross = await http.post(
                path,
                headers={**WRITE, "Origin": "https://evil.test"},
                json={"service": "pool", "instance": a.url},
            )
            assert cross.status_code == 403, path
        await until(lambda: run_of(gw).state is not None, 5, "the first check")
        assert run_of(gw).percent == 0.0  # nothing refused moved the rule
        assert [ep.label for ep in gw.clusters["pool"].endpoints] == [a.url[7:], b.url[7:]]


async def test_the_strangler_state_and_commands() -> None:
    old, new, a, b = Shadow("old"), Shadow("new"), Shadow("a"), Shadow("b")
    async with servers(old, new, a, b), running(config(old, new, a, b)) as (_, gw), admin(gw) as http:
        await until(lambda: run_of(gw).state is not None, 5, "the first check")
        rules = (await http.get("/strangler", headers=AUTH)).json()["rules"]
        assert [(r["route"], r["old"], r["new"], r["status"], r["percent"]) for r in rules] == [
            ("profile", "old", "new", "paused", 0.0)
        ]
        advanced = await http.post("/strangler/profile/advance", headers=WRITE)
        assert advanced.status_code == 200
        assert (advanced.json()["percent"], advanced.json()["status"]) == (20.0, "paused")
        assert run_of(gw).percent == 20.0
        splits = (await http.get("/splits", headers=AUTH)).json()["routes"]
        assert [(s["service"], s["weight"]) for s in splits["profile"]["split"]] == [
            ("old", 80.0),
            ("new", 20.0),
        ]
        assert splits["profile"]["strangler"] == "paused"
        resumed = await http.post("/strangler/profile/resume", headers=WRITE)
        assert resumed.json()["status"] == "running"
        back = await http.post("/strangler/profile/rollback", headers=WRITE)
        assert (back.json()["status"], back.json()["percent"]) == ("rolled_back", 0.0)
        unknown_route = await http.post("/strangler/nope/pause", headers=WRITE)
        assert unknown_route.status_code == 404
        assert "profile" in unknown_route.json()["detail"]
        unknown_command = await http.post("/strangler/profile/jump", headers=WRITE)
        assert unknown_command.status_code == 409
        assert "unknown command" in unknown_command.json()["detail"]
        wrong_method = await http.get("/strangler/profile/pause", headers=AUTH)
        assert wrong_method.status_code == 405
        metrics = (await http.get("/metrics", headers=AUTH)).text
        assert 'edgeway_strangler_status{route="profile",status="rolled_back"} 1.0' in metrics
        assert 'edgeway_strangler_rollbacks{route="profile"} 1.0' in metrics
        assert 'edgeway_strangler_percent{route="profile"} 0.0' in metrics


async def test_breakers_and_instances_are_listed() -> None:
    old, new, a, b = Shadow("old"), Shadow("new"), Shadow("a"), Shadow("b")
    async with servers(old, new, a, b), running(config(old, new, a, b)) as (_, gw), admin(gw) as http:
        found = (await http.get("/breakers", headers=AUTH)).json()["services"]
        listed = (await http.get("/instances", headers=AUTH)).json()["services"]
    assert found["pool"]["breaker"] == "closed"
    assert [(i["instance"], i["breaker"], i["available"]) for i in found["pool"]["instances"]] == [
        (a.url[7:], "closed", True),
        (b.url[7:], "closed", True),
    ]
    assert "old" not in found  # a service without resilience has no breaker
    assert [i["url"] for i in listed["pool"]["instances"]] == [a.url, b.url]
    assert listed["pool"]["drained"] == []
    assert listed["old"]["instances"][0]["in_flight"] == 0


async def test_a_drained_instance_takes_no_new_request_and_finishes_the_one_in_flight() -> None:
    old, new, a = Shadow("old"), Shadow("new"), Shadow("a")
    release = asyncio.Event()
    b = Shadow("b", hold=release)
    async with servers(old, new, a, b), running(config(old, new, a, b)) as (port, gw), admin(gw) as http:
        held_client = await Client.connect(port)
        held: asyncio.Task[Any] | None = None
        # Round robin: one of the first two requests goes to b, and waits there.
        for _ in range(2):
            task = asyncio.create_task(held_client.request("GET", "/pool/x", headers={"Host": "gw"}))
            await asyncio.wait(
                {task, asyncio.create_task(b.arrived.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if b.arrived.is_set():
                held = task
                break
            await task
        assert held is not None
        assert not held.done()
        drained = await http.post(
            "/instances/drain", headers=WRITE, json={"service": "pool", "instance": b.url}
        )
        assert drained.status_code == 200
        body = drained.json()
        assert [i["url"] for i in body["instances"]] == [a.url]
        assert body["drained"] == [b.url]
        assert body["finishing"] == [{"instance": b.url[7:], "in_flight": 1}]
        client = await Client.connect(port)
        after = await answers(client, 20, "/pool/x")
        assert after == {"a": 20}  # nothing new to b
        release.set()
        finished = await held
        assert (finished.status, finished.headers["x-backend"]) == (200, "b")  # not dropped
        again = await http.post(
            "/instances/undrain", headers=WRITE, json={"service": "pool", "instance": b.url[7:]}
        )
        assert [i["url"] for i in again.json()["instances"]] == [a.url, b.url]
        back = await answers(client, 20, "/pool/x")
        missing = await http.post(
            "/instances/drain", headers=WRITE, json={"service": "pool", "instance": "10.9.9.9:1"}
        )
        await client.close()
        await held_client.close()
    assert back["b"] > 0
    assert missing.status_code == 404
    assert "its instances" in missing.json()["detail"]
