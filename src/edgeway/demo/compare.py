"""The three patterns side by side, in numbers: the same screens loaded through each edge.

A *screen* is what one page of the web app (or the partner's one question) needs: the home page
(categories, products, the customer's recent orders) and a product page (the product, its stock,
its reviews). Through the Direct pattern the client makes every call itself, to several services;
through the gateway or a BFF it makes fewer — one, once the edge aggregates. For each edge and
screen this measures calls per screen, bytes per screen, latency (p50, p99) and screens per second
under concurrent load, and counts errors.

The loads behave like a well-mannered client: a load refused with ``429`` waits the
``Retry-After`` it was given and is tried again (counted as *throttled*, not as an error), so a
rate-limited edge (the partner gateway: 20 requests/s per partner) is measured at the pace it
allows instead of failing; its latency is that of the answered attempt, its screens per second
are then the limit's. Every call says who makes it (``User-Agent: edgeway-demo-compare``).

``rtt_ms`` adds a client round-trip time to every call (a sleep before it, the calls of one screen
in parallel as a browser makes them): on loopback a call costs almost nothing, while over a mobile
network each round trip is what the user waits for.

Used by ``edgeway demo compare`` (against a running demo), ``bench/shop.py`` and the shop's smoke
load test (every request must succeed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.table import Table

__all__ = ["Call", "Screen", "ScreenResult", "login", "measure", "results_table", "screens"]

SKU = "POT-01"
USER_AGENT = "edgeway-demo-compare"
# A load refused more often than this in a row is an error: the limit does not refill.
MAX_THROTTLED_ATTEMPTS = 20
MAX_RETRY_AFTER_S = 30.0


@dataclass(frozen=True, slots=True)
class Call:
    urls: tuple[str, ...]  # one is picked per call (the Direct client balances between instances)
    auth: str | None = None  # "user" | "partner"


@dataclass(frozen=True, slots=True)
class Screen:
    edge: str
    name: str
    calls: tuple[Call, ...]


@dataclass
class ScreenResult:
    edge: str
    name: str
    calls: int
    loads: int = 0
    errors: int = 0
    throttled: int = 0  # 429 answers waited out (Retry-After) and tried again
    bytes: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    first_error: str | None = None

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "edge": self.edge,
            "screen": self.name,
            "calls_per_screen": self.calls,
            "bytes_per_screen": round(statistics.fmean(self.bytes)) if self.bytes else 0,
            "p50_ms": round(_percentile(lat, 50), 2),
            "p99_ms": round(_percentile(lat, 99), 2),
            "screens_per_s": round(self.loads / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "loads": self.loads,
            "errors": self.errors,
            "throttled": self.throttled,
            "first_error": self.first_error,
        }


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def screens(urls: Mapping[str, str], edges: Sequence[str]) -> list[Screen]:
    """The screens of each edge; ``urls`` maps process names (``catalog-1``, ``web-bff``...) to URLs."""

    def one(edge: str, path: str, auth: str | None = None) -> Call:
        return Call((urls[edge] + path,), auth)

    catalog = (urls["catalog-1"], urls["catalog-2"])
    out = [
        Screen(
            "direct",
            "home",
            (
                Call(tuple(u + "/categories" for u in catalog)),
                Call(tuple(u + "/products" for u in catalog)),
                one("orders", "/orders?limit=3", "user"),
            ),
        ),
        Screen(
            "direct",
            "product",
            (
                Call(tuple(f"{u}/products/{SKU}" for u in catalog)),
                one("inventory", f"/stock/{SKU}"),
                one("legacy", f"/reviews/{SKU}"),
            ),
        ),
    ]
    if "gateway" in edges:
        out.append(Screen("gateway", "product", (one("gateway", f"/v1/products/{SKU}/full", "partner"),)))
    if "web-bff" in edges:
        out.append(Screen("web-bff", "home", (one("web-bff", "/api/home", "user"),)))
        out.append(Screen("web-bff", "product", (one("web-bff", f"/api/products/{SKU}", "user"),)))
    if "mobile-bff" in edges:
        out.append(Screen("mobile-bff", "home", (one("mobile-bff", "/m/home", "user"),)))
        out.append(Screen("mobile-bff", "product", (one("mobile-bff", f"/m/products/{SKU}", "user"),)))
    return out


async def login(security_url: str, username: str, password: str, partner: tuple[str, str]) -> dict[str, str]:
    """Tokens for the screens: a customer's (password grant) and the partner's (client credentials)."""
    async with httpx.AsyncClient(timeout=10.0) as http:
        user = await http.post(
            security_url + "/oauth/token",
            data={
                "grant_type": "password",
                "username": username,
                "password": password,
                "client_id": "shop-web",
                "scope": "catalog orders notifications profile reviews",
            },
        )
        user.raise_for_status()
        client = await http.post(
            security_url + "/oauth/token", data={"grant_type": "client_credentials"}, auth=partner
        )
        client.raise_for_status()
    return {"user": user.json()["access_token"], "partner": client.json()["access_token"]}


async def measure(
    screen_list: Sequence[Screen],
    tokens: Mapping[str, str],
    *,
    loads: int = 100,
    concurrency: int = 8,
    rtt_ms: float = 0.0,
    warm_connections: bool = False,
) -> list[ScreenResult]:
    """Load each screen ``loads`` times, ``concurrency`` at once; one screen after the other.

    ``warm_connections``: before measuring a screen, open every connection its loads can use
    at once (when a connection costs a round trip: behind a delay proxy)."""
    results = []
    # Kept-alive connections to every origin a screen calls, as a browser keeps them (six per
    # origin): a Direct screen reaches five origins, and a connection made again for want of a
    # pool slot would charge Direct a handshake the browser does not pay.
    pool = max(64, concurrency * 8)
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    headers = {"User-Agent": USER_AGENT}
    async with httpx.AsyncClient(timeout=15.0, limits=limits, headers=headers) as http:
        for screen in screen_list:
            result = ScreenResult(screen.edge, screen.name, len(screen.calls))
            await _load_screen(http, screen, tokens, result, 2, 1, rtt_ms)  # warm the connections
            if warm_connections:
                await _warm(http, screen, tokens, concurrency)
            result = ScreenResult(screen.edge, screen.name, len(screen.calls))
            started = time.perf_counter()
            await _load_screen(http, screen, tokens, result, loads, concurrency, rtt_ms)
            result.elapsed_s = time.perf_counter() - started
            results.append(result)
    return results


async def _warm(http: httpx.AsyncClient, screen: Screen, tokens: Mapping[str, str], concurrency: int) -> None:
    """Open, to every instance a screen may pick, as many connections as the loads can use at
    once (the calls of a screen that may go there, times the loads at once): the two loads
    before chose instances at random, and a measured load must not pay for a handshake."""
    wanted: dict[str, tuple[int, str | None]] = {}
    for call in screen.calls:
        for url in call.urls:
            count, _ = wanted.get(url, (0, None))
            wanted[url] = (count + concurrency, call.auth)

    async def get(url: str, auth: str | None) -> None:
        headers = {"Authorization": f"Bearer {tokens[auth]}"} if auth else {}
        with contextlib.suppress(httpx.HTTPError):
            await http.get(url, headers=headers)

    await asyncio.gather(*(get(url, auth) for url, (n, auth) in wanted.items() for _ in range(n)))


async def _load_screen(
    http: httpx.AsyncClient,
    screen: Screen,
    tokens: Mapping[str, str],
    result: ScreenResult,
    loads: int,
    concurrency: int,
    rtt_ms: float,
) -> None:
    remaining = loads

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            for attempt in range(MAX_THROTTLED_ATTEMPTS):
                started = time.perf_counter()
                outcomes = await asyncio.gather(*(_call(http, c, tokens, rtt_ms) for c in screen.calls))
                latency_ms = (time.perf_counter() - started) * 1000
                wait = max((o.retry_after for o in outcomes if o.retry_after is not None), default=None)
                if wait is None or attempt + 1 == MAX_THROTTLED_ATTEMPTS:
                    break
                result.throttled += 1
                await asyncio.sleep(wait)
            result.latencies_ms.append(latency_ms)
            result.loads += 1
            result.bytes.append(sum(o.size for o in outcomes))
            failed = False
            for o in outcomes:
                result.statuses[o.status] = result.statuses.get(o.status, 0) + 1
                if o.error is not None:
                    failed = True
                    result.first_error = result.first_error or o.error
            result.errors += failed

    await asyncio.gather(*(worker() for _ in range(concurrency)))


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: int
    size: int
    error: str | None = None
    retry_after: float | None = None  # seconds, when the call was refused by a rate limit


def retry_after_seconds(value: str | None) -> float:
    """A 429's ``Retry-After`` (delay-seconds) as a wait; 1 s when absent or not a number (an
    HTTP date is not sent by edgeway), capped so a wrong header cannot stall the run."""
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(MAX_RETRY_AFTER_S, max(0.0, seconds))


async def _call(http: httpx.AsyncClient, call: Call, tokens: Mapping[str, str], rtt_ms: float) -> _Outcome:
    if rtt_ms:
        await asyncio.sleep(rtt_ms / 1000)
    url = random.choice(call.urls)
    headers = {"Authorization": f"Bearer {tokens[call.auth]}"} if call.auth else {}
    try:
        response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return _Outcome(0, 0, f"GET {url}: {type(exc).__name__}: {exc}")
    size = len(response.content)
    if response.status_code >= 400:
        error = f"GET {url}: {response.status_code} {response.text[:200]}"
        wait = None
        if response.status_code == 429:
            wait = retry_after_seconds(response.headers.get("retry-after"))
        return _Outcome(response.status_code, size, error, wait)
    return _Outcome(response.status_code, size)


def results_table(summaries: Sequence[Mapping[str, Any]], title: str) -> Table:
    """The summaries as a table: one row per edge and screen."""
    table = Table(title=title, title_justify="left")
    columns = ("edge", "screen", "calls", "bytes", "p50 ms", "p99 ms", "screens/s", "429 waited", "errors")
    for column in columns:
        table.add_column(column, justify="left" if column in ("edge", "screen") else "right")
    for s in summaries:
        table.add_row(
            str(s["edge"]),
            str(s["screen"]),
            str(s["calls_per_screen"]),
            f"{s['bytes_per_screen']:,}",
            f"{s['p50_ms']:.1f}",
            f"{s['p99_ms']:.1f}",
            f"{s['screens_per_s']:.1f}",
            str(s.get("throttled", 0)),
            str(s["errors"]) if not s["errors"] else f"[red]{s['errors']}[/red]",
        )
    return table
