"""``./dev bench slow``: many clients in front of a slow service.

The backend answers every request after 50 ms; wrk holds 1,000 connections. A proxy then needs
about 1,000 requests in flight upstream to keep up (throughput = in flight / latency), so what is
measured is whether the proxy lets them through: a connection pool with a fixed cap (256
connections to a 50 ms service allow 5k req/s), or a listen backlog too small for a thousand
clients connecting at once (SYNs dropped, retried a second later), or a listener that accepts
them one per event-loop turn (they wait seconds in the accept queue while the open connections
are served), show up here and in nothing else: each wrk run opens its connections at once, and
their first requests are 1 % of a 10-second run, so they are its p99. Legs, one worker each, in
front of the same backend:

    direct      wrk -> backend                       (the ceiling)
    edgeway     wrk -> edgeway gateway -> backend    (default pool, access log on)
    nginx       wrk -> nginx -> backend              (upstream keepalive 64, no connection cap)
    aiohttp     wrk -> aiohttp proxy -> backend      (its connector without a per-host limit)

Target: edgeway >= 0.8x nginx's req/s, with no errors (a leg with errors is a failed leg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import gateway, nginx
from bench.errors import BenchError
from bench.harness import ManagedProcess, machine, reserved_port
from bench.legs import Leg, Outcome, Settings, prepare_wrk_run, ratio, run_legs, say
from bench.proxy import aiohttp_proxy_process, backend_process, finish_workdir, nginx_skip_reason
from bench.report import Target, emit, show, targets_dict

DEFAULT_CONNECTIONS = (1000,)
DEFAULT_DELAY_MS = 50.0
LEG_NAMES = ("direct", "edgeway", "nginx", "aiohttp")


def legs(backend_url: str, backend_port: int, names: Sequence[str] = LEG_NAMES) -> list[Leg]:
    nginx_skip = nginx_skip_reason()

    def start_edgeway(d: Path) -> ManagedProcess:
        config = gateway.proxy_config(port=reserved_port(), backend_url=backend_url, access_log=True)
        return gateway.process(d, config).start()

    def start_nginx(d: Path) -> ManagedProcess:
        return nginx.process(d, port=reserved_port(), backend_port=backend_port, access_log=False).start()

    def start_aiohttp(d: Path) -> ManagedProcess:
        # The baseline written the way a developer would for a slow service: no per-host cap.
        return aiohttp_proxy_process(d, port=0, upstream=backend_url, limit_per_host=0).start()

    every = [
        Leg("direct", "backend (direct)", url=backend_url),
        Leg("edgeway", "edgeway (log on)", start=start_edgeway, skip=gateway.unavailable_reason()),
        Leg("nginx", "nginx (log off)", start=start_nginx, skip=nginx_skip),
        Leg("aiohttp", "aiohttp proxy", start=start_aiohttp),
    ]
    return [leg for leg in every if leg.name in names]


def summarize(outcomes: dict[str, Outcome], settings: Settings, delay_ms: float) -> dict[str, Any]:
    c = max(settings.connections)

    def metric(name: str, key: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.median(c, key)

    rps = {name: metric(name, "rps") for name in LEG_NAMES}
    failed = [name for name, o in outcomes.items() if o.status.value == "failed"]
    targets = [Target(f"edgeway/nginx at {c} conns", ratio(rps["edgeway"], rps["nginx"]), ">=", 0.8)]
    return {
        "edgeway_rps": rps["edgeway"],
        "nginx_rps": rps["nginx"],
        "aiohttp_rps": rps["aiohttp"],
        "direct_rps": rps["direct"],
        "ratio_nginx": ratio(rps["edgeway"], rps["nginx"]),
        "ratio_aiohttp": ratio(rps["edgeway"], rps["aiohttp"]),
        "p50_ms": {name: metric(name, "p50_ms") for name in LEG_NAMES},
        "p99_ms": {name: metric(name, "p99_ms") for name in LEG_NAMES},
        "connections": c,
        "delay_ms": delay_ms,
        "failed": bool(failed),
        "details": {
            "machine": machine(),
            "settings": settings.as_dict(),
            "legs": {name: o.as_dict() for name, o in outcomes.items()},
            "failed_legs": failed,
            "targets": targets_dict(targets),
        },
        "_targets": targets,
    }


def run(
    json: bool = False,
    duration: float = 10.0,
    connections: Sequence[int] = DEFAULT_CONNECTIONS,
    *,
    delay_ms: float = DEFAULT_DELAY_MS,
    repetitions: int = 1,
    warmup: float = 2.0,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the slow-backend benchmark, print it, and return the result (the ``--json`` object)."""
    unknown = sorted(set(only or ()) - set(LEG_NAMES))
    if unknown:
        raise BenchError(f"unknown leg(s) {', '.join(unknown)}: choose from {', '.join(LEG_NAMES)}")
    settings, workdir = prepare_wrk_run("slow", connections, duration, repetitions, warmup)
    with backend_process(workdir, port=0, delay_ms=delay_ms) as backend:
        say(f"backend on {backend.url}, answering after {delay_ms:g} ms")
        outcomes = run_legs(legs(backend.url, backend.port, only or LEG_NAMES), settings, workdir)
    result = summarize(outcomes, settings, delay_ms)
    finish_workdir(workdir, failed=result["failed"])
    targets: list[Target] = result.pop("_targets")
    c = result["connections"]
    summary = [
        ("edgeway / nginx", show(result["ratio_nginx"])),
        ("edgeway / aiohttp", show(result["ratio_aiohttp"])),
        (
            f"p50 at {c} conns: edgeway / nginx",
            f"{show(result['p50_ms']['edgeway'], ' ms')} / {show(result['p50_ms']['nginx'], ' ms')}",
        ),
        (
            f"p99 at {c} conns: edgeway / nginx",
            f"{show(result['p99_ms']['edgeway'], ' ms')} / {show(result['p99_ms']['nginx'], ' ms')}",
        ),
    ]
    emit(
        result,
        as_json=json,
        title=f"edgeway bench slow (backend +{delay_ms:g} ms)",
        outcomes=outcomes,
        settings=settings,
        summary=summary,
        targets=targets,
    )
    return result
