"""The reload fault test: reload the config 50 times under load, zero failed requests."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from edgeway.gateway.process.reload import request_reload
from live_gateway import Client, backends, gateway_config, once, ports, route, service, serving, write

RELOADS = 50


async def test_fifty_reloads_under_load_fail_no_request(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a1", "a2", "b1", "b2") as be:

        def config(n: int) -> dict[str, Any]:
            # Every reload changes the routes; every other one also moves service b to another
            # instance (a rebuilt cluster) while service a stays (a kept cluster).
            tag = f"v{n}"
            b = be["b1"] if n % 2 else be["b2"]
            routes = [route("/a/**", "a", tag), route("/b/**", "b", tag)]
            if n % 3 == 0:
                routes.append(route(f"/extra{n}/**", "a", tag))
            return gateway_config(port, admin, {"a": service(be["a1"], be["a2"]), "b": service(b)}, routes)

        write(cfg, config(0))
        async with serving(cfg) as server:
            stop = asyncio.Event()
            statuses: Counter[int] = Counter()
            errors: list[str] = []
            tags: set[str] = set()  # seen on keep-alive connections: they follow reloads too

            async def keepalive_client(path: str) -> None:
                client = await Client.connect(port)
                try:
                    while not stop.is_set():
                        resp = await client.get(path)
                        statuses[resp.status] += 1
                        tags.add(resp.headers.get("x-config", "?"))
                finally:
                    await client.close()

            async def new_connection_client(path: str) -> None:
                while not stop.is_set():
                    resp = await once(port, "GET", path)
                    statuses[resp.status] += 1

            async def guarded(coro: Any) -> None:
                try:
                    await coro
                except Exception as exc:  # a dropped connection, a timeout: a failed request
                    errors.append(repr(exc))

            load = [
                *(asyncio.create_task(guarded(keepalive_client("/a/x"))) for _ in range(4)),
                *(asyncio.create_task(guarded(keepalive_client("/b/x"))) for _ in range(2)),
                *(asyncio.create_task(guarded(new_connection_client("/a/y"))) for _ in range(2)),
            ]
            await asyncio.sleep(0.2)
            outcomes: Counter[str] = Counter()
            for n in range(1, RELOADS + 1):
                write(cfg, config(n))
                outcomes[(await request_reload("127.0.0.1", admin))["status"]] += 1
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*load)
            assert server.reloader is not None
            assert server.reloader.generation == RELOADS + 1

    assert errors == []
    assert outcomes == {"applied": RELOADS}
    total = sum(statuses.values())
    assert statuses == {200: total}, statuses
    assert total > RELOADS * 10  # the load really overlapped the reloads
    assert len(tags) > RELOADS // 2  # and saw the configs change under it
