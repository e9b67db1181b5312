"""The demo's control room shows the progressive strangler moving: it reads each edge's admin
``GET /strangler`` (a real gateway's admin listener, with the demo's token) and serves the
rule's step, percent and status in ``/api/state``, updated as the rule moves."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from strangler_helpers import run_of, strangler_route, until
from traffic_helpers import Shadow, instances, running, servers

from edgeway.demo.control.server import ControlRoom, ControlRoomSettings
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.admin import AdminHandler
from edgeway.gateway.process.admin_auth import AdminGuard
from edgeway.http.listener import Listener, bind_socket

TOKEN = "demo-admin-token"


@contextlib.asynccontextmanager
async def admin_port(gw: Gateway) -> AsyncIterator[int]:
    listener = Listener(AdminHandler(gw, AdminGuard(TOKEN)), gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port
    finally:
        await listener.shutdown(1.0)


@contextlib.asynccontextmanager
async def control_room(edge_admin: int, token: str) -> AsyncIterator[ControlRoom]:
    settings = ControlRoomSettings(
        host="127.0.0.1",
        port=0,
        ports={"gateway-admin": edge_admin},
        edges=["gateway"],
        pattern="gateway",
        admin_token=token,
        nats_url="nats://127.0.0.1:1",
        config_bucket=None,
        security_url="",
        user=("u", "p"),
        partner=("c", "s"),
        shop=False,
        services=["profile"],
    )
    room = ControlRoom(settings, list, {"gateway": "gateway"}, clients={})
    await room.start()
    try:
        yield room
    finally:
        await room.stop()


async def shown(room: ControlRoom) -> dict[str, Any]:
    """Poll the edges once, as the room does every few seconds, and read what it serves."""
    async with httpx.AsyncClient(timeout=5) as edges:
        await room.health.poll(edges)
    async with httpx.AsyncClient(base_url=room.url, timeout=5) as http:
        health: dict[str, Any] = (await http.get("/api/state")).json()["health"]
    return health


def config(old: Shadow, new: Shadow) -> dict[str, Any]:
    return {
        "services": {"old": instances(old), "new": instances(new)},
        "routes": [strangler_route(steps=[10, 50, 100], start="paused")],
    }


async def test_the_control_room_shows_the_rule_moving() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with (
        servers(old, new),
        running(config(old, new)) as (_, gw),
        admin_port(gw) as port,
        control_room(port, TOKEN) as room,
    ):
        await until(lambda: run_of(gw).state is not None, 5, "the first check")
        [paused] = (await shown(room))["strangler"]["gateway"]
        assert (paused["route"], paused["step"], paused["percent"], paused["status"]) == (
            "profile",
            -1,
            0.0,
            "paused",
        )
        assert paused["steps"] == [10, 50, 100]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            moved = await http.post(
                "/strangler/profile/advance",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
        assert moved.status_code == 200
        [advanced] = (await shown(room))["strangler"]["gateway"]
        assert (advanced["step"], advanced["percent"]) == (0, 10.0)
        assert "sides" not in advanced  # trimmed to what the room shows


async def test_a_wrong_token_shows_the_edge_s_error_not_a_rule() -> None:
    old, new = Shadow("old"), Shadow("new")
    async with (
        servers(old, new),
        running(config(old, new)) as (_, gw),
        admin_port(gw) as port,
        control_room(port, "wrong") as room,
    ):
        health = await shown(room)
    assert health["strangler"] == {}
    assert "401" in health["edge_errors"]["gateway"]
