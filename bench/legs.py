"""Legs of a benchmark, run one after another in the same run, with medians over repetitions.

A leg is one target (edgeway, nginx, the aiohttp baseline, the backend alone) started on its own,
warmed up, driven by wrk at each connection count, measured for memory, and stopped before the
next leg starts, so legs never compete for the two cores. Repetitions are interleaved (round 1 of
every leg, then round 2, ...) so a slow drift of the machine spreads over all legs instead of
penalising the last one.
"""

from __future__ import annotations

import enum
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import idle, wrk
from bench.errors import BenchError, ProcessFailed
from bench.harness import (
    ManagedProcess,
    mb,
    median,
    raise_fd_limit,
    require_tool,
    tree_cpu_seconds,
    tree_rss_bytes,
)

# A run is not a measurement when the target answered errors or refused connections (a proxy
# answering 502 at once would look fast): at most 0.1 % of requests. Timeouts and resets are
# what an overloaded baseline really does at 256 connections, so they may reach 1 %.
MAX_REFUSED_SHARE = 0.001
MAX_ERROR_SHARE = 0.01


def acceptable(result: wrk.WrkResult) -> bool:
    if result.requests == 0:
        return False
    refused = result.errors.status + result.errors.connect
    return (
        refused <= MAX_REFUSED_SHARE * result.requests
        and result.errors.total <= MAX_ERROR_SHARE * result.requests
    )


progress = Console(stderr=True, highlight=False)


def say(message: str) -> None:
    progress.print(f"[dim]bench:[/dim] {message}")


@dataclass(frozen=True)
class Leg:
    """How to run one target.

    ``start`` gets a fresh directory for the target's files and returns a *started* process;
    ``None`` means the target is already running at ``url`` (the backend measured directly).
    ``skip`` is the reason the leg cannot run on this machine, decided before the run.
    """

    name: str
    label: str
    start: Callable[[Path], ManagedProcess] | None = None
    url: str | None = None
    path: str = "/"
    skip: str | None = None
    idle_connections: int = 0
    headers: tuple[tuple[str, str], ...] = ()  # sent with every request (e.g. a bearer token)


class Status(enum.Enum):
    OK = "ok"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass
class Outcome:
    leg: Leg
    status: Status = Status.OK
    reason: str | None = None
    samples: dict[int, list[wrk.WrkResult]] = field(default_factory=dict)
    cpu_us: dict[int, list[float]] = field(default_factory=dict)  # CPU µs per request, per run
    rss_mb: float | None = None
    idle: idle.IdleResult | None = None

    def fail(self, reason: str) -> None:
        self.status = Status.FAILED
        self.reason = reason

    def median(self, connections: int, metric: str) -> float | None:
        runs = self.samples.get(connections)
        if self.status is not Status.OK or not runs:
            return None
        values = [getattr(r, metric) for r in runs]
        return round(median(values), 3 if metric.endswith("_ms") else 1)

    def cpu_us_per_request(self, connections: int) -> float | None:
        runs = self.cpu_us.get(connections)
        if self.status is not Status.OK or not runs:
            return None
        return round(median(runs), 1)

    def rps(self, connections: int) -> float | None:
        return self.median(connections, "rps")

    def as_dict(self) -> dict[str, Any]:
        runs: dict[str, Any] = {}
        for c, results in self.samples.items():
            runs[str(c)] = {
                "rps": self.median(c, "rps"),
                "p50_ms": self.median(c, "p50_ms"),
                "p90_ms": self.median(c, "p90_ms"),
                "p99_ms": self.median(c, "p99_ms"),
                "cpu_us_per_request": self.cpu_us_per_request(c),
                "errors": sum(r.errors.total for r in results),
                "samples": [r.as_dict() for r in results],
            }
        return {
            "label": self.leg.label,
            "status": self.status.value,
            "reason": self.reason,
            "runs": runs,
            "rss_mb": self.rss_mb,
            "idle": None
            if self.idle is None
            else {
                "connections": self.idle.connections,
                "rss_before_mb": self.idle.rss_before_mb,
                "rss_held_mb": self.idle.rss_held_mb,
                "per_connection_kb": self.idle.per_connection_kb,
            },
        }


@dataclass(frozen=True)
class Settings:
    connections: Sequence[int]
    duration_s: float
    repetitions: int = 1
    warmup_s: float = 2.0
    threads: int = 2

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": list(self.connections),
            "duration_s": self.duration_s,
            "repetitions": self.repetitions,
            "warmup_s": self.warmup_s,
            "wrk_threads": self.threads,
            "keep_alive": True,
        }


def prepare_wrk_run(
    name: str, connections: Sequence[int], duration: float, repetitions: int, warmup: float
) -> tuple[Settings, Path]:
    """What every wrk-driven benchmark does first: check wrk is there, raise the fd limit, and
    make its settings and a work directory (``edgeway-bench-<name>-*``)."""
    require_tool("wrk", "apt-get install wrk")
    raise_fd_limit()
    settings = Settings(
        connections=tuple(connections), duration_s=duration, repetitions=repetitions, warmup_s=warmup
    )
    return settings, Path(tempfile.mkdtemp(prefix=f"edgeway-bench-{name}-"))


def run_legs(legs: Sequence[Leg], settings: Settings, workdir: Path) -> dict[str, Outcome]:
    outcomes = {leg.name: Outcome(leg) for leg in legs}
    for leg in legs:
        if leg.skip:
            outcomes[leg.name].status = Status.SKIPPED
            outcomes[leg.name].reason = leg.skip
            say(f"[yellow]skip[/yellow] {leg.label}: {leg.skip}")
    script = wrk.write_script(workdir)
    for rep in range(settings.repetitions):
        for leg in legs:
            outcome = outcomes[leg.name]
            if outcome.status is not Status.OK:
                continue
            last = rep == settings.repetitions - 1
            try:
                _run_once(leg, outcome, settings, workdir / f"{leg.name}-{rep}", script, last)
            except BenchError as exc:
                outcome.fail(str(exc))
                say(f"[red]failed[/red] {leg.label}: {exc}")
    return outcomes


def _run_once(
    leg: Leg, outcome: Outcome, settings: Settings, directory: Path, script: Path, last: bool
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    process = leg.start(directory) if leg.start is not None else None
    try:
        _measure(leg, outcome, settings, directory, script, last, process)
    except BenchError as exc:
        # A target that crashed makes wrk fail with "connection refused"; say what really happened.
        if process is not None and not process.alive():
            raise ProcessFailed(leg.label, f"died during the run ({exc})", process.log_tail()) from exc
        raise
    finally:
        if process is not None:
            process.stop()


def _measure(
    leg: Leg,
    outcome: Outcome,
    settings: Settings,
    directory: Path,
    script: Path,
    last: bool,
    process: ManagedProcess | None,
) -> None:
    base = process.url if process is not None else leg.url
    if base is None:
        raise BenchError(f"leg {leg.name} has neither a process nor a url")
    url = base + leg.path
    if settings.warmup_s > 0:
        say(f"warm up {leg.label}")
        wrk.run(
            url,
            connections=max(settings.connections),
            duration_s=settings.warmup_s,
            script=script,
            threads=settings.threads,
            headers=leg.headers,
        )
    for c in settings.connections:
        say(f"{leg.label}: wrk -t{settings.threads} -c{c} -d{settings.duration_s:g}s")
        cpu_before = tree_cpu_seconds(process.pid) if process is not None else None
        result = wrk.run(
            url,
            connections=c,
            duration_s=settings.duration_s,
            script=script,
            threads=settings.threads,
            headers=leg.headers,
        )
        if process is not None and cpu_before is not None and result.requests:
            spent = tree_cpu_seconds(process.pid) - cpu_before
            outcome.cpu_us.setdefault(c, []).append(spent / result.requests * 1e6)
        if not acceptable(result):
            raise BenchError(
                f"{result.errors.total} failed requests of {result.requests} at {c} connections "
                f"({result.errors}); see the logs in {directory}"
            )
        outcome.samples.setdefault(c, []).append(result)
        cpu = outcome.cpu_us.get(c, [None])[-1] if process is not None else None
        cpu_text = f", {cpu:.1f} µs CPU/request" if cpu is not None else ""
        say(f"  {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms{cpu_text}")
    if process is not None and last:
        outcome.rss_mb = mb(tree_rss_bytes(process.pid))
        if leg.idle_connections:
            say(f"{leg.label}: holding {leg.idle_connections} idle keep-alive connections")
            outcome.idle = idle.measure(
                process.host, process.port, process.pid, connections=leg.idle_connections, path=leg.path
            )
            say(f"  RSS {outcome.idle.rss_held_mb} MB")
    if process is not None and not process.alive():
        raise ProcessFailed(leg.label, "died during the run", process.log_tail())


def headline_connections(connections: Sequence[int], preferred: int = 32) -> int:
    """The connection count the headline numbers use: 32 when measured, else the first."""
    return preferred if preferred in connections else connections[0]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)
