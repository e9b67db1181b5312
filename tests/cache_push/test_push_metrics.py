"""The push families per transport, scraped from a running gateway's admin ``/metrics``: open
connections, messages sent and why connections ended, for a WebSocket and an SSE client side by
side. Overflows, discarded messages and send timeouts are asserted where a slow client is made
(test_push_websocket.py, test_push_sse.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets
from cache_push_helpers import with_test_identity
from push_helpers import LOCAL, push_cfg
from test_gateway_metrics import Samples, scrape, value
from test_push_sse import open_stream

from live_gateway import ports, serving, write


@pytest.fixture(autouse=True)
def _identity(monkeypatch: pytest.MonkeyPatch) -> None:
    with_test_identity(monkeypatch)


async def until(admin: int, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until ``name{labels}`` reads ``expected`` (the gateway sees a close on a later loop
    turn than the client makes it); fails after 5 s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        samples = await scrape(admin)
        if value(samples, name, **labels) == expected:
            return samples
        assert loop.time() - started < 5, f"{name}{labels} = {value(samples, name, **labels)}, not {expected}"
        await asyncio.sleep(0.02)


async def test_connections_sent_messages_and_endings_are_counted_per_transport(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = push_cfg(settings={"sources": ["push_helpers:LOCAL"]})
    cfg.update({"listen": {"port": port}, "admin": {"port": admin}, "reload": {"watch": False}})
    write(tmp_path / "gw.yaml", cfg)
    async with serving(tmp_path / "gw.yaml"):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/push?topic=news", ping_interval=None)
        stream = await open_stream(port, "topic=news")
        await asyncio.wait_for(ws.recv(), 3)  # "subscribed": both clients are on the topic now
        during = await scrape(admin)
        for n in range(3):
            LOCAL.publish("news", {"n": n})
        for n in range(3):
            assert json.loads(await asyncio.wait_for(ws.recv(), 3))["data"] == {"n": n}
            assert (await stream.event())["data"] == {"n": n}
        sent = await scrape(admin)
        await ws.close()
        stream.close()
        await until(admin, "edgeway_gateway_push_connections", 0, transport="sse")
        after = await until(admin, "edgeway_gateway_push_connections", 0, transport="websocket")

    assert value(during, "edgeway_gateway_push_connections", transport="websocket") == 1
    assert value(during, "edgeway_gateway_push_connections", transport="sse") == 1
    assert value(during, "edgeway_gateway_push_sent_total", transport="websocket") == 0
    assert value(sent, "edgeway_gateway_push_sent_total", transport="websocket") == 3
    assert value(sent, "edgeway_gateway_push_sent_total", transport="sse") == 3
    assert value(sent, "edgeway_gateway_push_delivered_total") == 6
    for transport in ("websocket", "sse"):
        assert value(after, "edgeway_gateway_push_closed_total", transport=transport, reason="client") == 1
        assert value(after, "edgeway_gateway_push_overflows_total", transport=transport) == 0
        assert value(after, "edgeway_gateway_push_send_timeouts_total", transport=transport) == 0
        assert value(after, "edgeway_gateway_push_discarded_total", transport=transport) == 0
