"""The three patterns side by side at a client round trip: the shop's home and product screens
through Direct, the API gateway, the web BFF and the mobile BFF, each behind a delay proxy.

``python -m bench patterns [--json] [--rtt-ms 40] [--loads 30]`` starts the whole shop with
``edgeway demo`` (real processes, free ports, no control room), puts a user-space delay proxy
(:mod:`edgeway.demo.control.delay`) in front of every port a client reaches — every byte held
half the RTT each way, a new connection one RTT — and loads each screen of each pattern
``loads`` times, one after the other, its calls in parallel as the page makes them, on warm
connections (:func:`edgeway.demo.control.patterns.measure_patterns`). Latency is the p50 of the
screen, client side; bytes are the response bodies of its calls.

JSON keys: the headline figures first — ``direct_home_ms``, ``bff_home_ms``,
``gateway_product_ms``, ``direct_home_calls``, ``bff_home_calls``, ``direct_home_bytes``,
``bff_home_bytes``, ``mobile_product_bytes`` — then ``figures`` (``<pattern>_<screen>_ms``,
``_calls``, ``_bytes`` for every pattern and screen; ``bff`` is the web BFF, ``mobile`` the
mobile BFF), ``rtt_ms``, ``loads``, ``screens`` (one row per pattern and screen, as
``bench shop``), ``errors``, ``failed``, ``details.machine``.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.errors import BenchError
from bench.harness import machine
from bench.legs import say
from edgeway.demo.cli import CREDENTIALS, PARTNER
from edgeway.demo.compare import results_table
from edgeway.demo.control.patterns import DelayedPorts, measure_patterns, pattern_figures
from edgeway.demo.launch import launched_demo
from edgeway.demo.plan import ShopPlan

HEADLINE = (
    "direct_home_ms",
    "bff_home_ms",
    "gateway_product_ms",
    "direct_home_calls",
    "bff_home_calls",
    "direct_home_bytes",
    "bff_home_bytes",
    "mobile_product_bytes",
)


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys, from every figure of a run; a missing one is a harness error."""
    missing = [key for key in HEADLINE if key not in figures]
    if missing:
        raise BenchError(f"the run has no figure for {', '.join(missing)} (a pattern did not run?)")
    return {key: figures[key] for key in HEADLINE}


def run(json: bool = False, rtt_ms: float = 40.0, loads: int = 30, concurrency: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgeway-bench-patterns-") as tmp:
        say("starting the shop (edgeway demo)")
        # The partner gateway's rate limit (20/s per partner) would slow the loads to its pace.
        unlimited = {"SHOP_PARTNER_RATE": "1000000", "SHOP_PARTNER_BURST": "1000000"}
        args = ["--no-access-log", "--no-control-room"]
        with launched_demo(Path(tmp), pattern="all", extra_args=args, env=unlimited) as demo:
            urls = {name: demo.url(name) for name in demo.ports}
            edges = ShopPlan(demo.data_dir, demo.ports, "all").edges()
            say(f"loading each screen {loads} times through the delay proxies at {rtt_ms:g} ms")

            async def measure() -> dict[str, Any]:
                async with DelayedPorts(urls) as ports:
                    return await measure_patterns(
                        ports,
                        edges,
                        security_url=urls["security"],
                        user=(CREDENTIALS[0][0], CREDENTIALS[0][1]),
                        partner=PARTNER,
                        rtt_ms=rtt_ms,
                        loads=loads,
                        concurrency=concurrency,
                    )

            measured = asyncio.run(measure())
    figures = pattern_figures(measured)
    errors = sum(s["errors"] for s in measured["screens"])
    result: dict[str, Any] = {
        **headline(figures),
        "figures": figures,
        "rtt_ms": rtt_ms,
        "loads": loads,
        "concurrency": concurrency,
        "screens": measured["screens"],
        "errors": errors,
        "failed": errors > 0,
        "details": {"machine": machine()},
    }
    if json:
        print(jsonlib.dumps(result))
    else:
        _table(result)
    return result


def _table(result: dict[str, Any]) -> None:
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    title = (
        f"the patterns at a {result['rtt_ms']:g} ms client round trip: {result['loads']} loads per screen, "
        "warm connections, p50 per screen"
    )
    console.print(results_table(result["screens"], title))
    for key in HEADLINE:
        console.print(f"  {key:<22} {result[key]}")
    for s in result["screens"]:
        if s["first_error"]:
            console.print(f"  [red]{s['edge']} {s['screen']}[/red]: {s['first_error']}")
    m = result["details"]["machine"]
    console.print(f"[dim]machine: {m.get('cpu')}, {m.get('cores')} cores, load {m.get('loadavg_1m')}[/dim]")
