"""``./dev bench grpc``: unary gRPC calls through the gateway vs straight to the service.

    direct    grpcio client -> grpcio server
    gateway   grpcio client -> edgeway gateway (h2c in, protocol: h2 out) -> the same server

The call is :mod:`bench.rpc`'s (check a product's stock: a 30-byte request, a 90-byte answer),
the server its bare grpcio asyncio server (:mod:`bench.rpc_peer`), the client its grpcio
asyncio load loop (:mod:`bench.rpc_client`, one channel: one HTTP/2 connection, ``concurrency``
calls in flight on it), each a process of its own; the gateway runs as a user runs it, one
worker, access log on (to /dev/null). Legs are interleaved over ``--repetitions`` runs and the
medians reported: ``gateway_rps``, ``direct_rps``, ``ratio`` (gateway / direct; target ≥ 0.5),
``gateway_cpu_us_per_call`` (the gateway process's CPU over its leg's calls: what a call costs
it, whatever else the machine runs), and each leg's p50/p99 latency.

    python -m bench grpc --json
"""

from __future__ import annotations

import json as jsonlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import gateway
from bench.errors import BenchError
from bench.harness import machine, median, reserved_port, tree_cpu_seconds
from bench.rpc import client_leg, peer_process
from bench.rpc_peer import compile_proto

SERVICE = "rpcbench.Inventory"
TARGET_RATIO = 0.5


def gateway_config(port: int, upstream: str) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "bench-grpc-gateway",
        "listen": {"host": "127.0.0.1", "port": port, "http2": True},
        "admin": None,
        "access_log": {"enabled": True},
        "services": {"inventory": {"instances": [upstream], "protocol": "h2"}},
        "routes": [
            {"id": "inventory", "match": {"path": f"/{SERVICE}/**"}, "proxy": {"service": "inventory"}}
        ],
    }


def _figures(output: dict[str, Any]) -> dict[str, float]:
    run = output["runs"][-1]
    latencies = sorted(run["latencies_us"])
    return {
        "rps": run["calls"] / run["wall_s"],
        "p50_us": float(latencies[len(latencies) // 2]),
        "p99_us": float(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]),
        "client_cpu_us_per_call": run["cpu_s"] / run["calls"] * 1e6,
    }


def _main(calls: int, warmup: int, concurrency: int, repetitions: int) -> dict[str, Any]:
    reason = gateway.unavailable_reason()
    if reason is not None:
        raise BenchError(reason)
    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-grpc-"))
    legs: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
    try:
        proto_dir = compile_proto(directory / "proto")
        with peer_process("grpc-peer", "grpc", "--proto-dir", str(proto_dir), log_dir=directory) as peer:
            config = gateway_config(reserved_port(), f"http://127.0.0.1:{peer.port}")
            with gateway.process(directory / "gateway", config).start() as edge:
                urls = {
                    "direct": f"grpc://127.0.0.1:{peer.port}",
                    "gateway": f"grpc://127.0.0.1:{edge.port}",
                }
                for _ in range(repetitions):
                    for leg, url in urls.items():
                        before = tree_cpu_seconds(edge.pid)
                        output = client_leg(
                            "grpc",
                            url,
                            calls=calls,
                            warmup=warmup,
                            concurrency=[concurrency],
                            proto_dir=proto_dir,
                        )
                        figures = _figures(output)
                        if leg == "gateway":
                            # What a call costs the gateway, whatever else the machine is doing.
                            spent = tree_cpu_seconds(edge.pid) - before
                            figures["gateway_cpu_us_per_call"] = spent / (calls + warmup) * 1e6
                        legs[leg].append(figures)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    detail = {leg: {key: median([run[key] for run in runs]) for key in runs[0]} for leg, runs in legs.items()}
    gateway_rps = detail["gateway"]["rps"]
    direct_rps = detail["direct"]["rps"]
    return {
        "gateway_rps": round(gateway_rps),
        "direct_rps": round(direct_rps),
        "ratio": round(gateway_rps / direct_rps, 3),
        "gateway_cpu_us_per_call": round(detail["gateway"]["gateway_cpu_us_per_call"]),
        "target_ratio": TARGET_RATIO,
        "detail": detail,
        "calls": calls,
        "concurrency": concurrency,
        "repetitions": repetitions,
        "machine": machine(),
    }


def run(
    json: bool = False, calls: int = 5000, warmup: int = 500, concurrency: int = 32, repetitions: int = 3
) -> dict[str, Any]:
    """Run both legs and print the result (a table, or one JSON object with ``json``)."""
    result = _main(calls, warmup, concurrency, repetitions)
    if json:
        print(jsonlib.dumps(result))
        return result
    print(f"{calls} unary calls per leg, {concurrency} in flight on one channel, x{repetitions} (medians)")
    print(f"{'':<10}{'calls/s':>10}{'p50 µs':>10}{'p99 µs':>10}")
    for leg, f in result["detail"].items():
        print(f"{leg:<10}{f['rps']:>10.0f}{f['p50_us']:>10.0f}{f['p99_us']:>10.0f}")
    print(f"ratio gateway/direct: {result['ratio']:.2f} (target ≥ {TARGET_RATIO})")
    print(f"the gateway's CPU per call: {result['gateway_cpu_us_per_call']} µs")
    return result
