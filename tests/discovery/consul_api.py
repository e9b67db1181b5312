"""A small real HTTP server speaking Consul's health API (``/v1/health/service/<name>``), for
tests: there is no Consul binary on PyPI or in Debian here.

It answers in Consul's JSON shape, sets ``X-Consul-Index``, holds blocking queries
(``index`` + ``wait``) until the catalog changes, filters by ``passing`` and ``tag``, and
checks ``X-Consul-Token`` when a token is set. Tests change the catalog with :meth:`set`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Entry:
    node_address: str
    port: int
    address: str = ""  # the service address; empty means the node's
    tags: list[str] = field(default_factory=list)
    status: str = "passing"


class ConsulApi:
    def __init__(self) -> None:
        self.catalog: dict[str, list[Entry]] = {}
        self.index = 10
        self.token: str | None = None
        self.requests: list[dict[str, str]] = []
        self.tokens_seen: list[str | None] = []
        self.failing = False
        self._changed = asyncio.Condition()
        self.port = 0

    async def set(self, service: str, entries: list[Entry], *, index: int | None = None) -> None:
        async with self._changed:
            self.catalog[service] = entries
            self.index = self.index + 1 if index is None else index
            self._changed.notify_all()

    async def handle(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.requests.append(params)
        self.tokens_seen.append(request.headers.get("X-Consul-Token"))
        if self.failing:
            return web.Response(status=500, text="rpc error: No cluster leader")
        if self.token is not None and request.headers.get("X-Consul-Token") != self.token:
            return web.Response(status=403, text="ACL not found")
        service = request.match_info["service"]
        if "index" in params:
            wanted = int(params["index"])
            wait = _seconds(params.get("wait", "300s"))
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.index != wanted), wait)
        entries = self.catalog.get(service, [])
        out = [
            _shape(service, i, e)
            for i, e in enumerate(entries)
            if ("passing" not in params or e.status == "passing")
            and ("tag" not in params or params["tag"] in e.tags)
        ]
        return web.json_response(out, headers={"X-Consul-Index": str(self.index)})


def _seconds(text: str) -> float:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    assert found, text
    return float(found.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[found.group(2)]


def _shape(service: str, n: int, e: Entry) -> dict[str, Any]:
    return {
        "Node": {"ID": f"node-{n}", "Node": f"node-{n}", "Address": e.node_address, "Datacenter": "dc1"},
        "Service": {
            "ID": f"{service}-{n}",
            "Service": service,
            "Tags": e.tags,
            "Address": e.address,
            "Port": e.port,
            "Meta": {},
        },
        "Checks": [
            {"Node": f"node-{n}", "CheckID": "serfHealth", "Status": "passing"},
            {"Node": f"node-{n}", "CheckID": f"service:{service}-{n}", "Status": e.status},
        ],
    }


@contextlib.asynccontextmanager
async def consul_api() -> AsyncIterator[ConsulApi]:
    api = ConsulApi()
    app = web.Application()
    app.router.add_get("/v1/health/service/{service}", api.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api.port = runner.addresses[0][1]
    try:
        yield api
    finally:
        async with api._changed:
            api._changed.notify_all()
        await runner.cleanup()
