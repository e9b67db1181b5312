"""The figures of the RPC benchmarks, from what the client legs print (:mod:`bench.rpc_client`).

Kept apart from the processes so the arithmetic can be tested without starting any.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

# The figures of one leg at one concurrency.
FIELDS = ("cpu_us_per_call", "p50_us", "p99_us", "rps")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def summarize(run: Mapping[str, Any]) -> dict[str, float]:
    """One measured run (``calls``, ``cpu_s``, ``wall_s``, ``latencies_us``) as its figures."""
    calls = int(run["calls"])
    if calls <= 0 or run["wall_s"] <= 0:
        raise ValueError(f"a run needs calls and time, got calls={calls} wall_s={run['wall_s']}")
    latencies = run["latencies_us"]
    return {
        "cpu_us_per_call": round(run["cpu_s"] / calls * 1e6, 1),
        "p50_us": percentile(latencies, 50),
        "p99_us": percentile(latencies, 99),
        "rps": round(calls / run["wall_s"], 1),
    }


def median_of(summaries: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each figure's median over repeated runs (the machine is shared: one run can be unlucky)."""
    if not summaries:
        raise ValueError("no runs to take the median of")
    return {name: round(statistics.median(s[name] for s in summaries), 1) for name in FIELDS}


def by_concurrency(outputs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Repeated outputs of one leg (each with ``runs`` at several concurrencies) as the median
    figures per concurrency, keyed ``"c1"``, ``"c32"``..."""
    collected: dict[int, list[dict[str, float]]] = {}
    for output in outputs:
        for run in output["runs"]:
            collected.setdefault(int(run["concurrency"]), []).append(summarize(run))
    return {f"c{c}": median_of(runs) for c, runs in sorted(collected.items())}


def wire_bytes(outputs: Sequence[Mapping[str, Any]]) -> int:
    """Bytes on the caller's connection per call, both ways (the first output that counted)."""
    for output in outputs:
        if "bytes_up" in output:
            return round(float(output["bytes_up"]) + float(output["bytes_down"]))
    return 0


# result name -> the client leg's outputs it is made from; the bare HTTP and kit gRPC legs are optional
def peer_cpu_us_per_call(outputs: Sequence[Mapping[str, Any]]) -> float | None:
    """The answering side's CPU µs per call (median over the runs that measured it: the CPU its
    processes used while a client leg ran, over every call that leg made); None if none did."""
    values = [o["peer_cpu_s"] / o["peer_calls"] * 1e6 for o in outputs if o.get("peer_calls")]
    return round(statistics.median(values), 1) if values else None


RPC_LEGS = {
    "http_json": "kit",
    "http_json_bare": "kit_bare",
    "grpc": "grpc",
    "grpc_kit": "grpc_kit",
    "nats": "nats",
}


def rpc_result(legs: Mapping[str, Sequence[Mapping[str, Any]]], concurrency: Sequence[int]) -> dict[str, Any]:
    """``python -m bench rpc``'s result from the outputs of its legs (``kit``, ``grpc``, ``nats``
    and, when run, ``kit_bare``): the top-level figures (p50 at the lowest concurrency, calls/s
    at the highest, bytes per call) and the detail per concurrency."""
    low, high = f"c{min(concurrency)}", f"c{max(concurrency)}"
    out: dict[str, Any] = {}
    detail: dict[str, Any] = {}
    for name, leg in RPC_LEGS.items():
        if leg not in legs:
            continue
        figures: dict[str, Any] = dict(by_concurrency(legs[leg]))
        peer = peer_cpu_us_per_call(legs[leg])
        if peer is not None:
            figures["peer_cpu_us_per_call"] = peer
            out[f"{name}_peer_cpu_us_per_call"] = peer
        detail[name] = figures
        out[f"{name}_p50_us"] = figures[low]["p50_us"]
        out[f"{name}_rps"] = figures[high]["rps"]
        out[f"{name}_cpu_us_per_call"] = figures[low]["cpu_us_per_call"]
    out["bytes_json"] = wire_bytes(legs["kit"])
    out["bytes_grpc"] = wire_bytes(legs["grpc"])
    if "grpc_kit" in legs:
        out["bytes_grpc_kit"] = wire_bytes(legs["grpc_kit"])
    out["bytes_nats"] = wire_bytes(legs["nats"])
    out["detail"] = detail
    return out
