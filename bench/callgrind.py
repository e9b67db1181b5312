"""``edgeway bench callgrind``: user-space instructions per proxied request, counted by callgrind.

A wall-clock benchmark on a shared two-core VM moves by ±20% between runs; an instruction count
does not, so a change to the request path is judged by this number (docs/benchmarks.md). The
method:

    backend (bench/backend.py)  <-  edgeway gateway under valgrind --tool=callgrind
                                     --instr-atstart=no   <-  wrk -c1 -t1

The gateway (one worker, access log on, to /dev/null; GC off, so a collection cannot land in one
run and not the other) starts with instrumentation off; ``warmup`` seconds of load fill its pools
and caches, then ``callgrind_control -i on`` switches counting on, ``duration`` seconds of load
run, and counting goes off again before the gateway stops. Instructions ÷ requests wrk completed
in the counted window is the result. Run it against the compiled build (``./dev bench`` does;
``edgeway_engine`` in the result says which build ran).

``tracing``: a sample ratio turns the gateway's OpenTelemetry tracing on (``telemetry.tracing``)
with spans exported by OTLP/HTTP to the backend (it answers any path 200), so the count includes
recording, batching, encoding and sending them: callgrind counts every thread of the process,
the exporter's too. Compared with a run without it, it is what tracing costs per request.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import wrk
from bench.errors import BenchError
from bench.gateway import proxy_config, write_config
from bench.harness import ManagedProcess, python_env, python_module, require_tool, reserved_port, stopping
from edgeway.build import engine_build

_TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
# The gateway's own entry point, with the cyclic collector off before anything is imported.
_GATEWAY = "import gc, sys; gc.disable(); from edgeway.cli import main; sys.argv[0] = 'edgeway'; main()"


def instructions(out_file: Path) -> int:
    """The instruction total a callgrind output file records."""
    found = _TOTALS.findall(out_file.read_text(errors="replace"))
    if not found:
        raise BenchError(f"no instruction total in {out_file}")
    return int(found[-1])


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def tracing_config(sample_ratio: float, endpoint: str) -> dict[str, Any]:
    """The gateway's ``telemetry`` section with tracing on at ``sample_ratio``, exporting to
    ``endpoint``; the batch processor's defaults (5 s, 512 spans a batch)."""
    if not 0.0 <= sample_ratio <= 1.0:
        raise BenchError(f"--tracing is a sample ratio between 0 and 1, not {sample_ratio}")
    return {"tracing": {"enabled": True, "sample_ratio": sample_ratio, "endpoint": endpoint}}


def run(
    *,
    json: bool = False,
    duration: float = 10.0,
    warmup: float = 3.0,
    keep: Path | None = None,
    connections: int = 1,
    tracing: float | None = None,
) -> dict[str, Any]:
    require_tool("valgrind")
    require_tool("callgrind_control", "apt-get install valgrind")
    require_tool("wrk")
    with tempfile.TemporaryDirectory(prefix="edgeway-callgrind-") as tmp:
        work = Path(tmp)
        backend_port, gateway_port = reserved_port(), reserved_port()
        backend = ManagedProcess(
            "backend",
            python_module("bench.backend", "--port", str(backend_port)),
            port=backend_port,
            log_dir=work,
        )
        backend_url = f"http://127.0.0.1:{backend_port}"
        gateway_config = proxy_config(port=gateway_port, backend_url=backend_url)
        if tracing is not None:
            gateway_config["telemetry"] = tracing_config(tracing, f"{backend_url}/v1/traces")
        config = write_config(work, gateway_config)
        out_file = work / "callgrind.out"
        gateway = ManagedProcess(
            "edgeway",
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out_file}",
                sys.executable,
                "-c",
                _GATEWAY,
                "gateway",
                "--config",
                str(config),
            ],
            port=gateway_port,
            log_dir=work,
            env=python_env(),
        )
        script = wrk.write_script(work)
        url = f"http://127.0.0.1:{gateway_port}/bench"
        with stopping(backend, gateway):
            backend.start()
            gateway.start(timeout=120.0)  # valgrind runs start-up ~50x slower
            wrk.run(url, connections=connections, threads=1, duration_s=warmup, script=script)
            _control("-i", "on", str(gateway.pid))
            load = wrk.run(url, connections=connections, threads=1, duration_s=duration, script=script)
            _control("-i", "off", str(gateway.pid))
            gateway.stop()
        # valgrind writes the file at exit; give it a moment on a slow machine.
        for _ in range(100):
            if out_file.exists() and out_file.stat().st_size:
                break
            time.sleep(0.1)
        total = instructions(out_file)
        if keep is not None:
            # For callgrind_annotate: where the instructions go, function by function.
            shutil.copyfile(out_file, keep)
    result = {
        "benchmark": "callgrind",
        "edgeway_engine": engine_build(),
        "requests": load.requests,
        "errors": load.errors.total,
        "instructions": total,
        "instructions_per_request": round(total / load.requests) if load.requests else None,
        "connections": connections,
        "tracing_sample_ratio": tracing,  # None: tracing off
        "duration_s": duration,
        "warmup_s": warmup,
    }
    if json:
        import json as json_module

        print(json_module.dumps(result, indent=2))
    else:
        per = result["instructions_per_request"]
        traced = "tracing off" if tracing is None else f"tracing on, sample ratio {tracing}"
        print(f"edgeway ({result['edgeway_engine']}, {traced}): {per} instructions per proxied request")
        print(f"  {load.requests} requests, {total} instructions, {load.errors.total} errors")
    return result
