"""Drive a target with wrk and read its result.

wrk's human summary rounds latencies and prints units that change with magnitude ("812.00us",
"1.20ms"), so a Lua ``done()`` hook prints one JSON line with exact counts and the latency
percentiles in microseconds; :func:`parse_output` reads that line.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import WrkFailed
from bench.harness import require_tool

MARKER = "EDGEWAY_WRK "

# Latencies in wrk's summary are in microseconds. %d on LuaJIT truncates floats, which is what we
# want for counts; percentiles are printed with one decimal.
DONE_SCRIPT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'EDGEWAY_WRK {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%.1f,"mean":%.1f,"max":%.1f,"stdev":%.1f,' ..
    '"p50":%.1f,"p90":%.1f,"p99":%.1f,"p999":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


@dataclass(frozen=True)
class WrkErrors:
    connect: int = 0
    read: int = 0
    write: int = 0
    status: int = 0  # responses that were not 2xx or 3xx
    timeout: int = 0

    @property
    def total(self) -> int:
        return self.connect + self.read + self.write + self.status + self.timeout


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: WrkErrors = field(default_factory=WrkErrors)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rps"] = round(self.rps, 1)
        return d


def parse_output(text: str) -> WrkResult:
    """Read the ``done()`` line out of wrk's stdout; the rest of the output is ignored."""
    for line in text.splitlines():
        if line.startswith(MARKER):
            try:
                data = json.loads(line[len(MARKER) :])
                lat = data["latency_us"]
                return WrkResult(
                    requests=int(data["requests"]),
                    duration_s=int(data["duration_us"]) / 1e6,
                    bytes=int(data["bytes"]),
                    p50_ms=lat["p50"] / 1000,
                    p90_ms=lat["p90"] / 1000,
                    p99_ms=lat["p99"] / 1000,
                    p999_ms=lat["p999"] / 1000,
                    mean_ms=lat["mean"] / 1000,
                    max_ms=lat["max"] / 1000,
                    errors=WrkErrors(**{k: int(v) for k, v in data["errors"].items()}),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise WrkFailed(f"unreadable result line ({exc})", text) from exc
    raise WrkFailed("no result line in the output (is the done() script loaded?)", text)


def write_script(directory: Path) -> Path:
    path = directory / "edgeway_done.lua"
    path.write_text(DONE_SCRIPT)
    return path


def command(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 2,
    script: Path,
    timeout_s: float = 5.0,
    headers: Sequence[tuple[str, str]] = (),
) -> list[str]:
    # wrk needs at least one connection per thread.
    threads = max(1, min(threads, connections))
    extra = [arg for name, value in headers for arg in ("-H", f"{name}: {value}")]
    return [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        f"--timeout={timeout_s:g}s",
        *extra,
        "-s",
        str(script),
        url,
    ]


def run(
    url: str,
    *,
    connections: int,
    duration_s: float,
    script: Path,
    threads: int = 2,
    headers: Sequence[tuple[str, str]] = (),
) -> WrkResult:
    """One wrk run against ``url``; keep-alive is wrk's default. ``headers`` go on every request."""
    require_tool("wrk")
    argv = command(
        url, connections=connections, duration_s=duration_s, threads=threads, script=script, headers=headers
    )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    except subprocess.TimeoutExpired as exc:
        raise WrkFailed(f"did not finish within {duration_s + 30:.0f} s") from exc
    if done.returncode != 0:
        raise WrkFailed(f"exit status {done.returncode}", done.stdout + done.stderr)
    return parse_output(done.stdout)
