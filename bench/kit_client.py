"""``python -m bench kit-client``: the service kit's HTTP client, the choices side by side.

The kit's calls to its peers went through httpx; this measures what a call costs the caller
with each candidate, against the same kit service (FastAPI on uvicorn), same machine, same run:
httpx as the kit used it, httpx with ``sniffio`` importable, aiohttp, edgeway's upstream engine
alone, and the kit's client on the engine (what ``kit.client(...)`` is now). Per client and
concurrency (1 and 32 callers): the caller's CPU µs per call, p50 latency, calls/s, and the
bytes a call puts on the wire. Each leg is a process of its own (:mod:`bench.rpc_client`).

    python -m bench kit-client --json
"""

from __future__ import annotations

import json as jsonlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import machine
from bench.rpc import client_leg, peer_process
from bench.rpc_stats import by_concurrency, wire_bytes


def run(
    json: bool = False,
    calls: int = 3000,
    warmup: int = 300,
    concurrency: list[int] | None = None,
    repetitions: int = 3,
) -> dict[str, Any]:
    """Every client leg against one kit service; print a table, or one JSON object with ``json``."""
    levels = concurrency or [1, 32]
    legs = ("httpx", "httpx_sniffio", "aiohttp", "engine", "kit")
    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-kit-client-"))
    outputs: dict[str, list[dict[str, Any]]] = {leg: [] for leg in legs}
    try:
        with peer_process("http-peer", "http", log_dir=directory) as peer:
            for repetition in range(repetitions):
                for leg in legs:
                    outputs[leg].append(
                        client_leg(
                            leg,
                            peer.url,
                            calls=calls,
                            warmup=warmup,
                            concurrency=levels,
                            count_bytes=repetition == 0,
                        )
                    )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result: dict[str, Any] = {
        leg: {**by_concurrency(runs), "bytes_per_call": wire_bytes(runs)} for leg, runs in outputs.items()
    }
    first = outputs["httpx"][0]
    result["sniffio_installed"] = bool(first.get("sniffio_installed"))
    result["sniffio_stand_in"] = bool(outputs["httpx_sniffio"][0].get("sniffio_stand_in"))
    result["calls"] = calls
    result["repetitions"] = repetitions
    result["python"] = sys.version.split()[0]
    result["machine"] = machine()
    if json:
        print(jsonlib.dumps(result))
        return result
    print(f"{calls} calls per leg and concurrency, x{repetitions} (medians); the peer: a kit service")
    print(f"{'client':<15}{'conc':>5}{'CPU µs/call':>13}{'p50 µs':>10}{'calls/s':>10}")
    for leg in legs:
        for level, f in result[leg].items():
            if isinstance(f, dict):
                print(
                    f"{leg:<15}{level[1:]:>5}{f['cpu_us_per_call']:>13.0f}{f['p50_us']:>10.0f}{f['rps']:>10.0f}"
                )
    return result
