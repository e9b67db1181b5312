"""What the traffic-shifting tests share: backends on edgeway's own engine that say who answered
and record what reached them, an in-process gateway over real sockets with its Gateway object
at hand (to reach a route's split), and a keep-alive client."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.traffic.state import Traffic, traffic_of
from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits
from edgeway.http.listener import Listener, bind_socket
from live_gateway import Client, Response

__all__ = [
    "Client",
    "Recorded",
    "Response",
    "Shadow",
    "answers",
    "assignments",
    "instances",
    "running",
    "servers",
    "traffic",
    "within",
]


@dataclass(frozen=True)
class Recorded:
    """One request that reached a backend."""

    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; the last of a repeated name
    body: bytes


class Shadow(Listener):
    """A backend answering ``200 <name>`` (its name in ``x-backend`` too), recording every
    request. ``hold``: answer only once it is set (a slow backend); ``status``: what it answers."""

    def __init__(self, name: str, status: int = 200, hold: asyncio.Event | None = None) -> None:
        super().__init__(self.handle, ServerLimits())
        self.name = name
        self.status = status
        self.hold = hold
        self.seen: list[Recorded] = []
        self.arrived = asyncio.Event()
        self.answered = 0
        self.url = ""  # http://127.0.0.1:<port> once started

    async def handle(self, ex: Exchange) -> None:
        body = await ex.body.read_all(1 << 20)
        headers = {n.decode("latin-1").lower(): v.decode("latin-1") for n, v in ex.headers}
        self.seen.append(Recorded(ex.method.decode(), ex.target.decode("latin-1"), headers, body))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        self.answered += 1
        payload = self.name.encode()
        ex.respond(self.status, [(b"content-type", b"text/plain"), (b"x-backend", payload)], payload)


@contextlib.asynccontextmanager
async def servers(*backends: Shadow) -> AsyncIterator[None]:
    """Start the backends (each on a free port), stop them after."""
    started: list[Shadow] = []
    try:
        for b in backends:
            await b.start(bind_socket("127.0.0.1", 0, reuse_port=False))
            b.url = f"http://127.0.0.1:{b.port}"
            started.append(b)
        yield
    finally:
        for b in started:
            if b.hold is not None:
                b.hold.set()
            await b.shutdown(1.0)


def instances(*backends: Shadow, **service: Any) -> dict[str, Any]:
    """A service block with these backends as instances."""
    return {"instances": [b.url for b in backends], **service}


@contextlib.asynccontextmanager
async def running(cfg: dict[str, Any]) -> AsyncIterator[tuple[int, Gateway]]:
    """An in-process gateway serving ``cfg`` on a free port: (port, gateway)."""
    full = {"name": "traffic-gw", "admin": None, **cfg}
    gw = Gateway(validate_config(full), AccessLog("traffic-gw", io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port, gw
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


def traffic(gw: Gateway) -> Traffic:
    return traffic_of(gw.env)


async def answers(
    client: Client, count: int, path: str = "/x", headers: dict[str, str] | None = None
) -> Counter[str]:
    """``count`` GETs on one keep-alive connection: how many each backend answered (by the
    ``x-backend`` header; a request the gateway answered itself counts under its status)."""
    got: Counter[str] = Counter()
    for _ in range(count):
        response = await client.request("GET", path, headers={"Host": "gw", **(headers or {})})
        got[response.headers.get("x-backend", str(response.status))] += 1
    return got


def within(observed: int, trials: int, share: float, sigmas: float = 4.0) -> bool:
    """``observed`` is within ``sigmas`` standard deviations of a binomial(trials, share)'s mean."""
    mean = trials * share
    spread: float = sigmas * (trials * share * (1 - share)) ** 0.5
    return abs(observed - mean) <= spread


def assignments(pairs: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """key -> the backends that answered it (one each, when sticky)."""
    out: dict[str, set[str]] = {}
    for key, backend in pairs:
        out.setdefault(key, set()).add(backend)
    return out
