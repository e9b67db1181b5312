"""The patterns side by side at a client round-trip time: each screen of the shop loaded through
Direct, the API gateway, the web BFF and the mobile BFF, with a delay proxy
(:mod:`edgeway.demo.control.delay`) in front of every port a client reaches — calls, bytes and
latency per screen — and which ports each pattern makes a client reach.

The screens and how a screen is loaded are :mod:`edgeway.demo.compare`'s (the calls of one
screen in parallel, as the page makes them); here they go through the proxies instead of
sleeping before each call, so a new connection costs its handshake too. The control room runs
it on demand (the page's RTT picker) and ``python -m bench patterns`` at 40 ms.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from edgeway.demo.compare import login, measure, screens
from edgeway.demo.control.delay import DelayProxy

__all__ = [
    "CLIENT_PORTS",
    "PATTERN_NAMES",
    "DelayedPorts",
    "exposure",
    "measure_patterns",
    "pattern_figures",
]

# Every port some pattern's client reaches: what the proxies stand in front of.
CLIENT_PORTS = (
    "web",
    "security",
    "catalog-1",
    "catalog-2",
    "inventory",
    "orders",
    "notifications",
    "profile",
    "legacy",
    "gateway",
    "web-bff",
    "mobile-bff",
)
PATTERN_NAMES = {
    "direct": "Direct",
    "gateway": "API gateway",
    "web-bff": "web BFF",
    "mobile-bff": "mobile BFF",
}
# What the Direct web page calls (its /config.js): the ports its pattern must expose.
DIRECT_PORTS = (
    "web",
    "security",
    "catalog-1",
    "catalog-2",
    "inventory",
    "orders",
    "notifications",
    "profile",
    "legacy",
)


class DelayedPorts:
    """A delay proxy in front of each of ``urls`` (name -> URL), all at one RTT."""

    def __init__(
        self, urls: Mapping[str, str], names: Iterable[str] = CLIENT_PORTS, rtt_ms: float = 0.0
    ) -> None:
        self.targets = {name: urls[name] for name in names if name in urls}
        self.proxies: dict[str, DelayProxy] = {}
        self._rtt_ms = rtt_ms

    async def start(self) -> DelayedPorts:
        try:
            for name, url in self.targets.items():
                parts = urlsplit(url)
                proxy = DelayProxy(parts.hostname or "127.0.0.1", parts.port or 80, rtt_ms=self._rtt_ms)
                self.proxies[name] = await proxy.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.proxies.values()))
        self.proxies.clear()

    async def __aenter__(self) -> DelayedPorts:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def rtt_ms(self) -> float:
        return self._rtt_ms

    @rtt_ms.setter
    def rtt_ms(self, value: float) -> None:
        for proxy in self.proxies.values():
            proxy.rtt_ms = value
        self._rtt_ms = value

    def urls(self) -> dict[str, str]:
        """name -> the proxy's URL (the port behind the emulated network)."""
        return {name: proxy.url for name, proxy in self.proxies.items()}


async def measure_patterns(
    ports: DelayedPorts,
    edges: Sequence[str],
    *,
    security_url: str,
    user: tuple[str, str],
    partner: tuple[str, str],
    rtt_ms: float,
    loads: int = 5,
    concurrency: int = 1,
) -> dict[str, Any]:
    """Load every screen of every pattern ``loads`` times through ``ports`` at ``rtt_ms``.

    Signing in is not measured (it goes to ``security_url`` directly): the screens are."""
    tokens = await login(security_url, user[0], user[1], partner)
    ports.rtt_ms = rtt_ms
    results = await measure(
        screens(ports.urls(), edges), tokens, loads=loads, concurrency=concurrency, warm_connections=True
    )
    summaries = [r.summary() for r in results]
    for s in summaries:
        s["pattern"] = PATTERN_NAMES.get(s["edge"], s["edge"])
    return {"rtt_ms": rtt_ms, "loads": loads, "concurrency": concurrency, "screens": summaries}


def pattern_figures(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of one run: ``direct_home_ms``, ``bff_home_calls``... (p50 latency,
    calls and bytes per screen; ``bff`` is the web BFF, ``mobile`` the mobile BFF)."""
    short = {"direct": "direct", "gateway": "gateway", "web-bff": "bff", "mobile-bff": "mobile"}
    figures: dict[str, Any] = {}
    for s in result["screens"]:
        prefix = f"{short.get(s['edge'], s['edge'])}_{s['screen']}"
        figures[f"{prefix}_ms"] = s["p50_ms"]
        figures[f"{prefix}_calls"] = s["calls_per_screen"]
        figures[f"{prefix}_bytes"] = s["bytes_per_screen"]
    return figures


def exposure(ports: Mapping[str, int], edges: Sequence[str]) -> list[dict[str, Any]]:
    """Per port: its name, number, and per pattern whether a client of that pattern must reach it.

    Direct: what the Direct page calls (its files, the security service, every service it
    composes screens from). API gateway: the gateway. BFF: one BFF per client type. Every other
    port — the broker, the edges' admin ports, payments, and the services behind an edge — is
    the inside of the system."""
    reach = {
        "direct": set(DIRECT_PORTS),
        "gateway": {"gateway"} if "gateway" in edges else set(),
        "bff": {e for e in ("web-bff", "mobile-bff") if e in edges},
    }
    rows = []
    for name, port in ports.items():
        if name not in edges and name in ("gateway", "web-bff", "mobile-bff"):
            continue
        if name.endswith("-admin") and name.removesuffix("-admin") not in edges:
            continue
        rows.append({"name": name, "port": port, **{p: name in names for p, names in reach.items()}})
    return rows
