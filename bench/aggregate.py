"""``./dev bench aggregate``: one endpoint merging three delayed backends.

Legs, in one run:

    slowest     wrk -> one backend with the delay       (the floor: parallel calls cannot beat it)
    edgeway     wrk -> gateway aggregate endpoint -> 3 backends in parallel
    aiohttp     wrk -> aiohttp composition (bench.aiohttp_compose) -> 3 backends in parallel

Each backend adds ``delay_ms`` to every response. Targets: edgeway's p50 within 1.5 ms of the
delay (the calls run in parallel, not in sequence) at the lowest connection count, and edgeway >=
2.5x the aiohttp composition's requests/s at the highest.

Two loads, two questions. **Latency** is read at the lowest connection count (default 8), a
load the gateway serves without saturating a core (8 / 5 ms = 1,600 req/s at most; the summary
prints the share of a core the gateway used there), so p50 measures the work on one request and
the parallel calls, not queueing for the CPU. **Throughput** is read at the highest (default
256), where the gateway is CPU-bound and req/s measures its cost per request. At 32 connections
the gateway is already CPU-saturated on a 2-core machine shared with wrk and the backends, and
p50 there is mostly time spent waiting for the CPU.

The edgeway leg serves the aggregate endpoint of :func:`edgeway_config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import gateway
from bench.harness import ManagedProcess, machine, python_module, reserved_port
from bench.legs import Leg, Outcome, Settings, prepare_wrk_run, ratio, run_legs, say
from bench.proxy import backend_process, finish_workdir
from bench.report import Target, emit, show, targets_dict

BACKENDS = ("users", "orders", "offers")
DEFAULT_CONNECTIONS = (8, 256)  # latency below saturation, throughput at saturation


def edgeway_config(*, port: int, backends: Mapping[str, str]) -> dict[str, Any]:
    """The gateway config with one aggregate endpoint over ``backends`` (name -> base URL).

    ``GET /`` calls ``/`` on every backend in parallel and merges their top-level keys, the same
    job as the aiohttp composition. Each backend answers ``{"<name>": {...}}``, so each call
    declares the key it contributes (``allow``): strict merging then proves at load time that
    no call can overwrite another's data.
    """
    return {
        "version": 1,
        "name": "bench-aggregate",
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": None,
        "services": {name: {"instances": [url]} for name, url in backends.items()},
        "routes": [
            {
                "id": "screen",
                "match": {"path": "/", "methods": ["GET"]},
                "aggregate": {
                    "calls": {name: {"service": name, "path": "/", "allow": [name]} for name in backends},
                },
            }
        ],
    }


def compose_process(directory: Path, *, port: int, upstreams: Sequence[str]) -> ManagedProcess:
    args = ["--port", str(port)]
    for url in upstreams:
        args += ["--upstream", url]
    return ManagedProcess(
        "aiohttp_compose", python_module("bench.aiohttp_compose", *args), port=port, log_dir=directory
    )


def legs(backends: Mapping[str, str]) -> list[Leg]:
    urls = list(backends.values())
    edgeway_skip = gateway.unavailable_reason()

    def start_edgeway(d: Path) -> ManagedProcess:
        return gateway.process(d, edgeway_config(port=reserved_port(), backends=backends)).start()

    def start_aiohttp(d: Path) -> ManagedProcess:
        return compose_process(d, port=0, upstreams=urls).start()

    return [
        Leg("slowest", "one backend (the floor)", url=urls[0]),
        Leg("edgeway", "edgeway aggregate", start=start_edgeway, skip=edgeway_skip),
        Leg("aiohttp", "aiohttp composition", start=start_aiohttp),
    ]


def summarize(outcomes: Mapping[str, Outcome], settings: Settings, delay_ms: float) -> dict[str, Any]:
    # Latency at the lowest load, throughput at the highest: at a low connection count the
    # delay caps any aggregator (8 / 5 ms = 1.6k req/s), so throughput there measures the delay,
    # not the gateway, while p50 at a count that saturates the CPU measures queueing for it.
    lat_c, thr_c = min(settings.connections), max(settings.connections)

    def metric(name: str, key: str, c: int) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.median(c, key)

    edgeway_p50 = metric("edgeway", "p50_ms", lat_c)
    overhead = None if edgeway_p50 is None else round(edgeway_p50 - delay_ms, 3)
    edgeway_rps, aiohttp_rps = metric("edgeway", "rps", thr_c), metric("aiohttp", "rps", thr_c)

    def cpu(name: str, c: int = thr_c) -> float | None:
        o = outcomes.get(name)
        return None if o is None else o.cpu_us_per_request(c)

    # The share of one core the gateway used during the latency leg: well below 1, or p50 there
    # measures queueing after all.
    latency_rps, latency_cpu = metric("edgeway", "rps", lat_c), cpu("edgeway", lat_c)
    core_share = (
        None if latency_rps is None or latency_cpu is None else round(latency_rps * latency_cpu / 1e6, 3)
    )

    targets = [
        Target(f"edgeway p50 - backend delay at {lat_c} conns (ms)", overhead, "<=", 1.5),
        Target(f"edgeway/aiohttp at {thr_c} conns", ratio(edgeway_rps, aiohttp_rps), ">=", 2.5),
    ]
    failed = [name for name, o in outcomes.items() if o.status.value == "failed"]
    return {
        "edgeway_rps": edgeway_rps,
        "aiohttp_rps": aiohttp_rps,
        "ratio_aiohttp": ratio(edgeway_rps, aiohttp_rps),
        "p50_ms": edgeway_p50,
        "backend_delay_ms": delay_ms,
        "edgeway_cpu_us": cpu("edgeway"),
        "aiohttp_cpu_us": cpu("aiohttp"),
        "edgeway_cpu_us_latency_leg": latency_cpu,
        "latency_leg_core_share": core_share,
        # CPU per request of the aiohttp composition over edgeway's: the throughput ratio a
        # CPU-bound, otherwise idle machine would show, and stable when other work shares the cores.
        "cpu_ratio_aiohttp": ratio(cpu("aiohttp"), cpu("edgeway")),
        "failed": bool(failed),
        "details": {
            "machine": machine(),
            "settings": {**settings.as_dict(), "backends": list(BACKENDS)},
            "latency_connections": lat_c,
            "throughput_connections": thr_c,
            "legs": {name: o.as_dict() for name, o in outcomes.items()},
            "aiohttp_p50_ms": metric("aiohttp", "p50_ms", lat_c),
            "slowest_p50_ms": metric("slowest", "p50_ms", lat_c),
            "p50_overhead_ms": overhead,
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
    delay_ms: float = 5.0,
    repetitions: int = 1,
    warmup: float = 2.0,
) -> dict[str, Any]:
    """Run the aggregate benchmark, print it, and return the result (the ``--json`` object)."""
    settings, workdir = prepare_wrk_run("aggregate", connections, duration, repetitions, warmup)
    processes = [backend_process(workdir, port=0, name=name, delay_ms=delay_ms) for name in BACKENDS]
    try:
        for p in processes:
            p.start()
        backends = {name: p.url for name, p in zip(BACKENDS, processes, strict=True)}
        say(f"backends {', '.join(backends.values())}, {delay_ms:g} ms each")
        outcomes = run_legs(legs(backends), settings, workdir)
    finally:
        for p in processes:
            p.stop()
    result = summarize(outcomes, settings, delay_ms)
    finish_workdir(workdir, failed=result["failed"])
    targets: list[Target] = result.pop("_targets")
    summary = [
        ("edgeway / aiohttp", show(result["ratio_aiohttp"])),
        ("CPU per request: aiohttp / edgeway", show(result["cpu_ratio_aiohttp"])),
        ("edgeway p50", show(result["p50_ms"], " ms")),
        ("aiohttp p50", show(result["details"]["aiohttp_p50_ms"], " ms")),
        ("backend delay", f"{delay_ms:g} ms x {len(BACKENDS)} in parallel"),
        (
            "latency leg",
            f"{result['details']['latency_connections']} connections, below saturation: the gateway "
            f"used {show(result['latency_leg_core_share'])} of a core there",
        ),
        ("throughput leg", f"{result['details']['throughput_connections']} connections, CPU-bound"),
        ("edgeway CPU per request", f"{show(result['edgeway_cpu_us'], ' µs')} (throughput leg)"),
    ]
    emit(
        result,
        as_json=json,
        title="edgeway bench aggregate",
        outcomes=outcomes,
        settings=settings,
        summary=summary,
        targets=targets,
    )
    return result
