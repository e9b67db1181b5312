"""``./dev bench h2``: downstream HTTP/2 through the gateway against nginx, h2load driving many
streams per connection over h2c (prior knowledge), one worker each, in front of the same
HTTP/1.1 backend, in one run:

    edgeway   h2load (-c clients, -m streams each, h2c) -> edgeway, listen.http2 -> backend (log on)
    nginx     h2load (the same)                          -> nginx, listen http2    -> backend (log off)

Target (issue 16): edgeway >= 0.3x nginx's requests per second.
"""

from __future__ import annotations

import json as json_module
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import gateway, nginx
from bench.errors import BenchError, ToolMissing
from bench.harness import ManagedProcess, machine, median, raise_fd_limit, reserved_port, tree_cpu_seconds
from bench.legs import say
from bench.proxy import backend_process, finish_workdir, nginx_skip_reason
from bench.report import Target, targets_dict

LEG_NAMES = ("edgeway", "nginx")
TARGET_RATIO = 0.3
_FINISHED = re.compile(r"finished in [\d.]+m?s, ([\d.]+) req/s")
_REQUESTS = re.compile(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")


@dataclass
class H2Leg:
    """Requests per second against one target, over its repetitions."""

    name: str
    label: str
    status: str = "ok"
    reason: str | None = None
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # the server's CPU per request

    @property
    def rps(self) -> float | None:
        return round(median(self.rates), 1) if self.rates and self.status == "ok" else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "status": self.status,
            "reason": self.reason,
            "rps": self.rps,
            "cpu_us_per_request": round(median(self.cpu_us), 1) if self.cpu_us else None,
            "samples": self.rates,
        }


def h2load_binary() -> str:
    path = shutil.which("h2load")
    if path is None:
        raise ToolMissing("h2load", "apt-get install nghttp2-client")
    return path


def h2load(url: str, seconds: float, clients: int, streams: int, warmup: float) -> float:
    """Requests per second h2load completed against ``url``; BenchError when any failed."""
    argv = [
        h2load_binary(),
        "-c",
        str(clients),
        "-m",
        str(streams),
        "-t",
        "1",
        "-D",
        str(max(1, round(seconds))),
        "--warm-up-time",
        str(max(0, round(warmup))),
        url,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + warmup + 60, check=False)
    rate, counts = _FINISHED.search(done.stdout), _REQUESTS.search(done.stdout)
    if done.returncode != 0 or rate is None or counts is None:
        raise BenchError(f"h2load failed (exit {done.returncode}): {(done.stdout + done.stderr)[-500:]}")
    if int(counts.group(3)) or not int(counts.group(2)):
        raise BenchError(f"h2load saw failed requests: {counts.group(0)}")
    return float(rate.group(1))


def measure(
    leg: H2Leg,
    start: Callable[[Path], ManagedProcess],
    workdir: Path,
    *,
    duration: float,
    warmup: float,
    repetitions: int,
    clients: int,
    streams: int,
) -> H2Leg:
    for rep in range(repetitions):
        directory = workdir / f"{leg.name}-{rep}"
        directory.mkdir(parents=True, exist_ok=True)
        try:
            process = start(directory)
        except BenchError as exc:
            leg.status, leg.reason = "failed", str(exc)
            return leg
        try:
            say(f"{leg.label}: h2load -c {clients} -m {streams} -D {duration:g}")
            cpu_before = tree_cpu_seconds(process.pid)
            rate = h2load(f"http://127.0.0.1:{process.port}/", duration, clients, streams, warmup)
            spent = tree_cpu_seconds(process.pid) - cpu_before
            leg.rates.append(round(rate, 1))
            leg.cpu_us.append(round(spent / max(1.0, rate * (duration + warmup)) * 1e6, 1))
            say(f"  {rate:,.0f} req/s")
        except BenchError as exc:
            leg.status, leg.reason = "failed", str(exc)
            say(f"[red]failed[/red] {leg.label}: {exc}")
            return leg
        finally:
            if not process.alive():
                leg.status, leg.reason = "failed", f"died: {process.log_tail()}"
            process.stop()
    return leg


def run(
    json: bool = False,
    duration: float = 10.0,
    *,
    clients: int = 4,
    streams: int = 32,
    repetitions: int = 1,
    warmup: float = 2.0,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run the HTTP/2 benchmark, print it, and return the result (the ``--json`` object)."""
    names = list(only or LEG_NAMES)
    unknown = sorted(set(names) - set(LEG_NAMES))
    if unknown:
        raise BenchError(f"unknown leg(s) {', '.join(unknown)}: choose from {', '.join(LEG_NAMES)}")
    h2load_binary()
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="edgeway-bench-h2-"))
    legs: dict[str, H2Leg] = {}
    options: dict[str, Any] = {
        "duration": duration,
        "warmup": warmup,
        "repetitions": repetitions,
        "clients": clients,
        "streams": streams,
    }

    def measured(leg: H2Leg, start: Callable[[Path], ManagedProcess], skip: str | None) -> H2Leg:
        if skip:
            leg.status, leg.reason = "skipped", skip
            return leg
        return measure(
            leg,
            start,
            workdir,
            duration=duration,
            warmup=warmup,
            repetitions=repetitions,
            clients=clients,
            streams=streams,
        )

    with backend_process(workdir, port=0) as backend:
        say(f"backend on {backend.url}")

        def start_edgeway(d: Path) -> ManagedProcess:
            config = gateway.proxy_config(port=reserved_port(), backend_url=backend.url, access_log=True)
            config["listen"]["http2"] = True
            return gateway.process(d, config).start()

        def start_nginx(d: Path) -> ManagedProcess:
            return nginx.process(
                d, port=reserved_port(), backend_port=backend.port, access_log=False, http2=True
            ).start()

        if "edgeway" in names:
            legs["edgeway"] = measured(
                H2Leg("edgeway", "edgeway h2c (log on)"), start_edgeway, gateway.unavailable_reason()
            )
        if "nginx" in names:
            legs["nginx"] = measured(H2Leg("nginx", "nginx h2c (log off)"), start_nginx, nginx_skip_reason())
    edgeway_rps = legs["edgeway"].rps if "edgeway" in legs else None
    nginx_rps = legs["nginx"].rps if "nginx" in legs else None
    ratio = round(edgeway_rps / nginx_rps, 3) if edgeway_rps and nginx_rps else None
    targets = [Target("ratio_nginx", ratio, ">=", TARGET_RATIO)]
    failed = [name for name, leg in legs.items() if leg.status == "failed"]
    result: dict[str, Any] = {
        "benchmark": "h2",
        "edgeway_rps": edgeway_rps,
        "nginx_rps": nginx_rps,
        "ratio_nginx": ratio,
        "targets": targets_dict(targets),
        "failed": failed,
        "details": {
            "legs": {name: leg.as_dict() for name, leg in legs.items()},
            "settings": {**options, "tool": "h2load", "protocol": "h2c (prior knowledge)"},
            "machine": machine(),
        },
    }
    finish_workdir(workdir, failed=bool(failed))
    if json:
        # Plain print: rich would wrap long lines and break the JSON.
        print(json_module.dumps(result))
    else:
        for leg in legs.values():
            say(f"{leg.label}: {leg.rps} req/s ({leg.status}{': ' + leg.reason if leg.reason else ''})")
        say(f"edgeway / nginx: {ratio} (target >= {TARGET_RATIO})")
    return result
