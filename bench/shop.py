"""The shop through each edge: the same screens, Direct vs API gateway vs BFFs, in numbers.

``./dev bench shop [--json] [--loads N] [--concurrency C] [--rtt-ms R]`` starts the whole shop with
``edgeway demo`` (real processes, free ports), then loads each screen of each edge N times, C at
once (:mod:`edgeway.demo.compare`): calls per screen, bytes per screen, p50/p99 latency, screens
per second, errors. ``--rtt-ms`` adds a client round trip to every call, to see what the number
of calls per screen costs on a slow network. A smoke load too: any failed request fails the run.

JSON keys: ``loads``, ``concurrency``, ``rtt_ms``, ``screens`` (one object per edge and screen:
``edge``, ``screen``, ``calls_per_screen``, ``bytes_per_screen``, ``p50_ms``, ``p99_ms``,
``screens_per_s``, ``loads``, ``errors``), ``errors`` (total), ``failed``, ``details.machine``.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.harness import machine
from bench.legs import say
from edgeway.demo.cli import PARTNER
from edgeway.demo.compare import login, measure, results_table, screens
from edgeway.demo.launch import launched_demo
from edgeway.demo.plan import ShopPlan


def run(
    json: bool = False, loads: int = 200, concurrency: int = 8, rtt_ms: float = 0.0, pattern: str = "all"
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgeway-bench-shop-") as tmp:
        say("starting the shop (edgeway demo)")
        with launched_demo(Path(tmp), pattern=pattern, extra_args=["--no-access-log"]) as demo:
            urls = {name: demo.url(name) for name in demo.ports}
            edges = ShopPlan(demo.data_dir, demo.ports, pattern).edges()  # type: ignore[arg-type]
            tokens = asyncio.run(login(urls["security"], "alice", "alice-pass", PARTNER))
            say(f"loading each screen {loads} times, {concurrency} at once, rtt {rtt_ms:g} ms")
            results = asyncio.run(
                measure(screens(urls, edges), tokens, loads=loads, concurrency=concurrency, rtt_ms=rtt_ms)
            )
    summaries = [r.summary() for r in results]
    errors = sum(s["errors"] for s in summaries)
    result: dict[str, Any] = {
        "loads": loads,
        "concurrency": concurrency,
        "rtt_ms": rtt_ms,
        "screens": summaries,
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
        f"the shop per edge: {result['loads']} loads per screen, {result['concurrency']} at once, "
        f"client rtt {result['rtt_ms']:g} ms"
    )
    console.print(results_table(result["screens"], title))
    for s in result["screens"]:
        if s["first_error"]:
            console.print(f"  [red]{s['edge']} {s['screen']}[/red]: {s['first_error']}")
    m = result["details"]["machine"]
    console.print(f"[dim]machine: {m.get('cpu')}, {m.get('cores')} cores, load {m.get('loadavg_1m')}[/dim]")
