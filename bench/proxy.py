"""``./dev bench proxy``: the gateway as a reverse proxy against nginx and an aiohttp proxy.

One run, legs in sequence, each target one worker in front of the same backend:

    direct      wrk -> backend                      (the ceiling: the backend is not the limit)
    edgeway     wrk -> edgeway gateway -> backend   (access log on, to /dev/null)
    nginx       wrk -> nginx -> backend             (access_log off: nginx at its fastest)
    nginx_log   wrk -> nginx -> backend             (access log on, to a file)
    aiohttp     wrk -> aiohttp client+server proxy -> backend

The headline compares edgeway with access logging on against nginx with it off, so the ratio is
conservative; ``details.ratios`` has the logged-nginx ratio too. Targets: edgeway >=
0.55x nginx and >= 2x aiohttp at 32 connections; p99 within 1 ms of nginx's; RSS <= 80 MB holding
1,000 idle keep-alive client connections.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import gateway, nginx
from bench.errors import BenchError, ToolMissing
from bench.harness import ManagedProcess, machine, python_module, reserved_port
from bench.legs import Leg, Outcome, Settings, headline_connections, prepare_wrk_run, ratio, run_legs, say
from bench.report import Target, emit, show, targets_dict

DEFAULT_CONNECTIONS = (32, 256)
IDLE_CONNECTIONS = 1000
LEG_NAMES = ("direct", "edgeway", "nginx", "nginx_log", "aiohttp")


def backend_process(directory: Path, *, port: int, name: str = "backend", **options: Any) -> ManagedProcess:
    """A not-yet-started :mod:`bench.backend`; options map to its flags (``delay_ms=5``)."""
    args = ["--port", str(port), "--name", name]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return ManagedProcess(name, python_module("bench.backend", *args), port=port, log_dir=directory)


def aiohttp_proxy_process(
    directory: Path, *, port: int, upstream: str, limit_per_host: int = 256
) -> ManagedProcess:
    argv = python_module(
        "bench.aiohttp_proxy",
        "--port",
        str(port),
        "--upstream",
        upstream,
        "--limit-per-host",
        str(limit_per_host),
    )
    return ManagedProcess("aiohttp", argv, port=port, log_dir=directory)


def nginx_skip_reason() -> str | None:
    try:
        nginx.nginx_binary()
    except ToolMissing as exc:
        return str(exc)
    return None


def legs(
    backend_url: str,
    backend_port: int,
    names: Sequence[str] = LEG_NAMES,
    idle_connections: int = IDLE_CONNECTIONS,
) -> list[Leg]:
    nginx_skip = nginx_skip_reason()

    def start_edgeway(d: Path) -> ManagedProcess:
        config = gateway.proxy_config(port=reserved_port(), backend_url=backend_url, access_log=True)
        return gateway.process(d, config).start()

    def start_nginx(access_log: bool) -> Any:
        def start(d: Path) -> ManagedProcess:
            name = "nginx_log" if access_log else "nginx"
            p = nginx.process(
                d, port=reserved_port(), backend_port=backend_port, access_log=access_log, name=name
            )
            return p.start()

        return start

    def start_aiohttp(d: Path) -> ManagedProcess:
        return aiohttp_proxy_process(d, port=0, upstream=backend_url).start()

    every = [
        Leg("direct", "backend (direct)", url=backend_url),
        Leg(
            "edgeway",
            "edgeway (log on)",
            start=start_edgeway,
            skip=gateway.unavailable_reason(),
            idle_connections=idle_connections,
        ),
        Leg(
            "nginx",
            "nginx (log off)",
            start=start_nginx(False),
            skip=nginx_skip,
            idle_connections=idle_connections,
        ),
        Leg("nginx_log", "nginx (log on)", start=start_nginx(True), skip=nginx_skip),
        Leg("aiohttp", "aiohttp proxy", start=start_aiohttp, idle_connections=idle_connections),
    ]
    return [leg for leg in every if leg.name in names]


def summarize(
    outcomes: dict[str, Outcome], settings: Settings, idle_connections: int = IDLE_CONNECTIONS
) -> dict[str, Any]:
    c = headline_connections(settings.connections)

    def rps(name: str, conns: int = c) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.rps(conns)

    def cpu(name: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.cpu_us_per_request(c)

    def p99(name: str) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.median(c, "p99_ms")

    edgeway = outcomes.get("edgeway")
    idle_rss = edgeway.idle.rss_held_mb if edgeway is not None and edgeway.idle is not None else None
    edgeway_p99, nginx_p99 = p99("edgeway"), p99("nginx")
    p99_gap = None if edgeway_p99 is None or nginx_p99 is None else round(edgeway_p99 - nginx_p99, 3)
    ratios = {
        str(conns): {
            "ratio_nginx": ratio(rps("edgeway", conns), rps("nginx", conns)),
            "ratio_nginx_log": ratio(rps("edgeway", conns), rps("nginx_log", conns)),
            "ratio_aiohttp": ratio(rps("edgeway", conns), rps("aiohttp", conns)),
            "ratio_direct": ratio(rps("edgeway", conns), rps("direct", conns)),
        }
        for conns in settings.connections
    }
    targets = [
        Target(f"edgeway/nginx at {c} conns", ratio(rps("edgeway"), rps("nginx")), ">=", 0.55),
        Target(f"edgeway/aiohttp at {c} conns", ratio(rps("edgeway"), rps("aiohttp")), ">=", 2.0),
        Target("edgeway p99 - nginx p99 (ms)", p99_gap, "<=", 1.0),
        Target(f"edgeway RSS with {idle_connections} idle conns (MB)", idle_rss, "<=", 80.0),
    ]
    failed = [name for name, o in outcomes.items() if o.status.value == "failed"]
    return {
        "edgeway_rps": rps("edgeway"),
        "nginx_rps": rps("nginx"),
        "aiohttp_rps": rps("aiohttp"),
        "ratio_nginx": ratio(rps("edgeway"), rps("nginx")),
        "ratio_aiohttp": ratio(rps("edgeway"), rps("aiohttp")),
        "p99_ms": p99("edgeway"),
        "edgeway_cpu_us": cpu("edgeway"),
        "nginx_cpu_us": cpu("nginx"),
        "aiohttp_cpu_us": cpu("aiohttp"),
        # CPU per request of nginx over edgeway's: the throughput ratio a CPU-bound, otherwise
        # idle machine would show, and stable when other work shares the cores.
        "cpu_ratio_nginx": ratio(cpu("nginx"), cpu("edgeway")),
        "idle_rss_mb": idle_rss,
        "connections": c,
        "failed": bool(failed),
        "details": {
            "machine": machine(),
            "settings": settings.as_dict(),
            "legs": {name: o.as_dict() for name, o in outcomes.items()},
            "ratios": ratios,
            "p99_gap_ms": p99_gap,
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
    repetitions: int = 1,
    warmup: float = 2.0,
    only: Sequence[str] | None = None,
    idle_connections: int = IDLE_CONNECTIONS,
) -> dict[str, Any]:
    """Run the proxy benchmark, print it, and return the result (the ``--json`` object)."""
    unknown = sorted(set(only or ()) - set(LEG_NAMES))
    if unknown:
        raise BenchError(f"unknown leg(s) {', '.join(unknown)}: choose from {', '.join(LEG_NAMES)}")
    settings, workdir = prepare_wrk_run("proxy", connections, duration, repetitions, warmup)
    with backend_process(workdir, port=0) as backend:
        say(f"backend on {backend.url}")
        chosen = legs(backend.url, backend.port, only or LEG_NAMES, idle_connections)
        outcomes = run_legs(chosen, settings, workdir)
    result = summarize(outcomes, settings, idle_connections)
    finish_workdir(workdir, failed=result["failed"])
    targets: list[Target] = result.pop("_targets")
    summary = [
        ("edgeway / nginx", show(result["ratio_nginx"])),
        ("edgeway / aiohttp", show(result["ratio_aiohttp"])),
        ("CPU per request: nginx / edgeway", show(result["cpu_ratio_nginx"])),
        ("edgeway p99 at {} conns".format(result["connections"]), show(result["p99_ms"], " ms")),
        (f"edgeway RSS, {idle_connections:,} idle keep-alive conns", show(result["idle_rss_mb"], " MB")),
    ]
    emit(
        result,
        as_json=json,
        title="edgeway bench proxy",
        outcomes=outcomes,
        settings=settings,
        summary=summary,
        targets=targets,
    )
    return result


def finish_workdir(workdir: Path, *, failed: bool) -> None:
    """Remove the run's files, unless a leg failed: then its logs are what the reader needs."""
    if failed:
        say(f"[red]a leg failed[/red]; logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
