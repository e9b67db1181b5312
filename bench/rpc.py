"""``python -m bench rpc``: one small request/response between two services, three ways.

The same call (check a product's stock: a 30-byte request, a 90-byte answer) as

- **JSON over HTTP/1.1**, from the service kit's client (``kit.client("inventory").post(...)``:
  discovery, breaker, request id and trace headers) to a kit service (FastAPI on uvicorn);
- **gRPC unary**, grpcio's asyncio channel to a grpcio asyncio server, with a proto compiled
  at bench time by grpcio-tools into a temporary directory;
- **msgpack over NATS request-reply**, nats-py on both sides, through an embedded nats-server
  on a free port,

each caller and each answering service a process of its own, at 1 and 32 concurrent callers.
The gRPC and NATS servers are bare (no interceptors, no logging), so a fourth leg sends the same
JSON call from the kit's client to a bare HTTP/1.1 server (:mod:`bench.rpc_bare`): what the
protocol costs, apart from what a service framework adds (``http_json_bare_*``); and a fifth makes
the gRPC call between kits, the kit's typed client (``GrpcChannel``) to a kit service serving the
same servicer (``create_app(grpc=[...])``, ``grpc_kit_*``): the figure to set against the kit's
JSON over HTTP;
``--repetitions`` runs of every leg, interleaved, medians reported. Per leg and concurrency:
the caller's CPU µs per call, p50 and p99 latency, calls/s; and the bytes each call puts on the
caller's connection, both ways (counted by a relay in the caller's process on a separate pass).

    python -m bench rpc --json
"""

from __future__ import annotations

import json as jsonlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.errors import ProcessFailed
from bench.harness import (
    ManagedProcess,
    machine,
    python_env,
    python_module,
    reserved_port,
    tree_cpu_seconds,
)
from bench.rpc_peer import compile_proto
from bench.rpc_stats import rpc_result

CLIENT_TIMEOUT_S = 600.0
BYTE_CALLS = 200  # bench.rpc_client's --byte-calls default


def client_leg(
    leg: str,
    url: str,
    *,
    calls: int,
    warmup: int,
    concurrency: Sequence[int],
    proto_dir: Path | None = None,
    count_bytes: bool = False,
) -> dict[str, Any]:
    """Run one leg of :mod:`bench.rpc_client` in a process of its own; its JSON result."""
    argv = python_module(
        "bench.rpc_client",
        leg,
        "--url",
        url,
        "--calls",
        str(calls),
        "--warmup",
        str(warmup),
        "--concurrency",
        *map(str, concurrency),
    )
    if proto_dir is not None:
        argv += ["--proto-dir", str(proto_dir)]
    if count_bytes:
        argv.append("--count-bytes")
    done = subprocess.run(
        argv, capture_output=True, text=True, env=python_env(), timeout=CLIENT_TIMEOUT_S, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise ProcessFailed(f"client leg {leg}", f"exited with status {done.returncode}", done.stderr[-3000:])
    result: dict[str, Any] = jsonlib.loads(lines[-1])
    return result


def served(output: dict[str, Any], warmup: int) -> int:
    """Every call a client leg made: warm-up and measured ones per concurrency, and the byte
    counting pass (20 unmeasured calls and the counted ones)."""
    total = sum(warmup + int(run["calls"]) for run in output["runs"])
    if "bytes_up" in output:
        total += 20 + int(output.get("byte_calls", BYTE_CALLS))
    return total


def peer_process(name: str, *args: str, log_dir: Path) -> ManagedProcess:
    return ManagedProcess(name, python_module("bench.rpc_peer", *args), port=0, log_dir=log_dir)


def _main(calls: int, warmup: int, concurrency: list[int], repetitions: int) -> dict[str, Any]:
    from edgeway.bus.embedded import EmbeddedNats

    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-rpc-"))
    outputs: dict[str, list[dict[str, Any]]] = {
        "kit": [],
        "kit_bare": [],
        "grpc": [],
        "grpc_kit": [],
        "nats": [],
    }
    grpc_kit_port = reserved_port()  # the kit's grpc_port is a number given to it
    try:
        proto_dir = compile_proto(directory / "proto")
        with (
            EmbeddedNats(port=0, data_dir=directory / "nats") as broker,
            peer_process("http-peer", "http", log_dir=directory) as http_peer,
            ManagedProcess(
                "http-bare-peer", python_module("bench.rpc_bare"), port=0, log_dir=directory
            ) as bare_peer,
            peer_process("grpc-peer", "grpc", "--proto-dir", str(proto_dir), log_dir=directory) as grpc_peer,
            ManagedProcess(
                "grpc-kit-peer",
                python_module(
                    "bench.rpc_peer",
                    "grpc-kit",
                    "--grpc-port",
                    str(grpc_kit_port),
                    "--proto-dir",
                    str(proto_dir),
                ),
                port=grpc_kit_port,
                log_dir=directory,
            ) as grpc_kit_peer,
            # It names the broker's port once its subscription is in place.
            peer_process("nats-peer", "nats", "--url", broker.url, log_dir=directory) as nats_peer,
        ):
            urls = {
                "kit": http_peer.url,
                "kit_bare": bare_peer.url,
                "grpc": f"grpc://127.0.0.1:{grpc_peer.port}",
                "grpc_kit": f"grpc://127.0.0.1:{grpc_kit_port}",
                "nats": broker.url,
            }
            # The answering side's processes per leg (for NATS the broker too): their CPU per
            # call is what the callers' figures leave out.
            assert broker.process is not None
            servers = {
                "kit": [http_peer.pid],
                "kit_bare": [bare_peer.pid],
                "grpc": [grpc_peer.pid],
                "grpc_kit": [grpc_kit_peer.pid],
                "nats": [nats_peer.pid, broker.process.pid],
            }
            for repetition in range(repetitions):
                for leg, url in urls.items():
                    before = sum(tree_cpu_seconds(pid) for pid in servers[leg])
                    output = client_leg(
                        "kit" if leg == "kit_bare" else leg,
                        url,
                        calls=calls,
                        warmup=warmup,
                        concurrency=concurrency,
                        proto_dir=proto_dir if leg in ("grpc", "grpc_kit") else None,
                        count_bytes=repetition == 0,
                    )
                    output["peer_cpu_s"] = sum(tree_cpu_seconds(pid) for pid in servers[leg]) - before
                    output["peer_calls"] = served(output, warmup)
                    outputs[leg].append(output)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result = rpc_result(outputs, concurrency)
    result["calls"] = calls
    result["repetitions"] = repetitions
    result["machine"] = machine()
    return result


def run(
    json: bool = False,
    calls: int = 3000,
    warmup: int = 300,
    concurrency: list[int] | None = None,
    repetitions: int = 3,
) -> dict[str, Any]:
    """Run the three legs and print the result (a table, or one JSON object with ``json``)."""
    levels = concurrency or [1, 32]
    result = _main(calls, warmup, levels, repetitions)
    if json:
        print(jsonlib.dumps(result))
        return result
    print(f"{calls} calls per leg and concurrency, x{repetitions} (medians)")
    print(f"{'':<16}{'conc':>5}{'p50 µs':>10}{'p99 µs':>10}{'calls/s':>10}{'CPU µs/call':>13}")
    for name, figures in result["detail"].items():
        for level, f in figures.items():
            if not isinstance(f, dict):
                continue
            print(
                f"{name:<16}{level[1:]:>5}{f['p50_us']:>10.0f}{f['p99_us']:>10.0f}"
                f"{f['rps']:>10.0f}{f['cpu_us_per_call']:>13.0f}"
            )
        if "peer_cpu_us_per_call" in figures:
            print(f"{name:<16} answering side: {figures['peer_cpu_us_per_call']:.0f} CPU µs per call")
    print(
        f"bytes per call on the caller's connection: JSON/HTTP {result['bytes_json']}, "
        f"gRPC {result['bytes_grpc']} (between kits {result.get('bytes_grpc_kit', '-')}), "
        f"msgpack/NATS {result['bytes_nats']}"
    )
    host = result["machine"]
    print(f"machine: {host['cpu']}, {host['cores']} cores, load average {host['loadavg_1m']} at the end")
    return result
