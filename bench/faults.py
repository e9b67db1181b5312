"""``./dev bench faults``: what the gateway does when instances die, hang or fail half the time.

Every scenario runs real processes on loopback: one or two :mod:`bench.fault_backend`
instances, ``edgeway gateway`` as a child process (access log off; its JSON event log kept), and
the :mod:`bench.fault_load` client holding steady keep-alive load while the fault happens:

- **kill**: two instances; one gets SIGKILL mid-load and is started again a few seconds later.
  ``kill_error_rate`` is the share of failed requests over the run, ``recovery_s`` the time from
  the kill to the last failed request (0 when none failed), ``rejoin_s`` the time from the
  restarted instance accepting connections to its first answer through the gateway.
- **hang**: one instance stops answering (its sockets stay open), then recovers. Reported: how
  fast the breaker opened, how fast the gateway answers while it is open (p99), how many
  requests still reached the hung instance (probes), and how fast the breaker closed after.
- **flaky**: two instances each failing half their requests with 500; retries on ``retry_on:
  [500]`` within a 20 % retry budget. Reported: upstream requests per client request (the retry
  amplification), the success rate, and the same with the budget at 100 % for comparison.
- **reload**: 50 config changes (a response header set to the generation) applied one after
  another through the admin API (``edgeway.gateway.process.reload.request_reload``) under load;
  ``reload_failed`` counts failed requests, and the last change must be in effect. Skipped,
  with ``reload_failed`` null, in an edgeway without live reload.

The scenario functions are also what ``tests/resilience/test_gateway_faults.py`` runs, with
shorter timelines, and asserts on.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json as jsonlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.errors import BenchError
from bench.fault_load import Load, Sample, percentile
from bench.gateway import argv as gateway_argv
from bench.gateway import unavailable_reason, write_config
from bench.harness import ManagedProcess, machine, python_module, raise_fd_limit, reserved_port
from bench.legs import say
from bench.report import Target, emit_scenarios, targets_dict

RELOAD_MODULE = "edgeway.gateway.process.reload"
# Seconds a process may take to listen: generous, a gateway worker on a loaded 2-core machine
# has been seen to need more than the harness's default 15 s.
START_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- processes


def backend(workdir: Path, name: str, port: int, *args: str) -> ManagedProcess:
    """A not-yet-started fault backend."""
    argv = python_module("bench.fault_backend", "--port", str(port), "--name", name, *args)
    return ManagedProcess(f"backend-{name}", argv, port=port, log_dir=workdir)


def gateway_config(port: int, admin: int, instances: Sequence[int], **service: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "faults-gateway",
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "access_log": {"enabled": False},
        "services": {"svc": {"instances": [f"http://127.0.0.1:{p}" for p in instances], **service}},
        "routes": [{"id": "all", "match": {"path": "/**"}, "proxy": {"service": "svc"}}],
    }


def gateway(workdir: Path, config: Mapping[str, Any]) -> ManagedProcess:
    """A not-yet-started gateway whose stdout (the JSON event log) goes to ``gateway.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = write_config(workdir, config)
    return ManagedProcess(
        "gateway",
        gateway_argv(path),
        port=int(config["listen"]["port"]),
        log_dir=workdir,
        stdout_path=workdir / "gateway.log",
    )


@contextlib.asynccontextmanager
async def running(*processes: ManagedProcess) -> AsyncIterator[None]:
    """Start processes in order (off the event loop: starting waits for the port), stop them after."""
    started: list[ManagedProcess] = []
    try:
        for p in processes:
            await asyncio.to_thread(p.start, START_TIMEOUT_S)
            started.append(p)
        yield
    finally:
        for p in reversed(started):
            await asyncio.to_thread(p.stop)


async def fetch(port: int, target: str, token: str | None = None) -> tuple[int, bytes, bytes]:
    """A one-off GET on its own connection: (status, head, body); ``token``: a bearer token."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    auth = f"authorization: Bearer {token}\r\n" if token else ""
    try:
        w.write(f"GET {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n{auth}connection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(r.read(), 5)
    finally:
        w.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def http_get(port: int, target: str) -> tuple[int, bytes]:
    """A one-off GET on its own connection: (status, body)."""
    status, _, body = await fetch(port, target)
    return status, body


async def backend_stats(port: int, *, reset: bool = False) -> dict[str, Any]:
    _, body = await http_get(port, "/_stats?reset=1" if reset else "/_stats")
    stats: dict[str, Any] = jsonlib.loads(body)
    return stats


async def set_mode(port: int, mode: str, *, reset: bool = False) -> None:
    status, body = await http_get(port, f"/_control?mode={mode}" + ("&reset=1" if reset else ""))
    if status != 200:
        raise BenchError(f"fault backend on port {port} refused mode {mode!r}: {body!r}")


async def scrape(admin: int) -> dict[str, float]:
    """The gateway's resilience counters from /metrics, as ``name{labels}`` → value."""
    from edgeway.gateway.process.admin_auth import find_token

    # The token the gateway generated for its loopback admin API (or EDGEWAY_ADMIN_TOKEN).
    _, _, body = await fetch(admin, "/metrics", find_token(admin))
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if not family.name.startswith("edgeway_"):
            continue
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "service")
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def events(workdir: Path) -> list[dict[str, Any]]:
    """The gateway's resilience log lines (breaker, ejection, health), in order."""
    found: list[dict[str, Any]] = []
    with contextlib.suppress(OSError), (workdir / "gateway.log").open() as f:
        for line in f:
            with contextlib.suppress(ValueError):
                entry = jsonlib.loads(line)
                if entry.get("logger") == "edgeway.resilience":
                    found.append(entry)
    return found


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# --------------------------------------------------------------------------- scenarios


async def kill_scenario(
    workdir: Path,
    *,
    connections: int = 16,
    before: float = 2.0,
    down: float = 3.0,
    after: float = 3.0,
    rate: float | None = None,
) -> dict[str, Any]:
    """SIGKILL one of two instances under load, start it again; errors and recovery times."""
    ports = {"a": reserved_port(), "b": reserved_port()}
    gport, admin = reserved_port(), reserved_port()
    cfg = gateway_config(
        gport,
        admin,
        list(ports.values()),
        timeouts={"connect": "250ms", "first_byte": "2s", "total": "5s"},
        retry={"attempts": 2},
        breaker={"instance": {"consecutive_failures": 3, "open_for": "1s"}},
        health_check={
            "interval": "500ms",
            "timeout": "250ms",
            "healthy_threshold": 2,
            "unhealthy_threshold": 2,
        },
    )
    victim = backend(workdir, "a", ports["a"])
    survivor = backend(workdir, "b", ports["b"])
    gw = gateway(workdir / "kill", cfg)
    async with running(victim, survivor, gw):
        load = Load(gport, connections, rate=rate)
        load.start()
        await asyncio.sleep(before)
        os.kill(victim.pid, signal.SIGKILL)
        killed_at = load.now()
        await asyncio.to_thread(victim.stop)  # reap it
        await asyncio.sleep(down)
        restarted = backend(workdir, "a", ports["a"])
        async with running(restarted):
            back_at = load.now()
            await asyncio.sleep(after)
            samples = await load.stop()
            metrics = await scrape(admin)
    return _kill_figures(samples, killed_at, back_at, metrics, events(workdir / "kill"))


def _kill_figures(
    samples: list[Sample],
    killed_at: float,
    back_at: float,
    metrics: dict[str, float],
    log: list[dict[str, Any]],
) -> dict[str, Any]:
    errors = [s for s in samples if not s.ok]
    after_kill = [s for s in errors if s.done >= killed_at]
    rejoined = next((s for s in samples if s.backend == "a" and s.sent >= back_at), None)
    return {
        "requests": len(samples),
        "errors": len(errors),
        "errors_before_kill": len(errors) - len(after_kill),
        "errors_after_2s": sum(1 for s in errors if s.sent > killed_at + 2.0),
        "error_statuses": sorted({s.status for s in errors}),
        "kill_error_rate": round(len(errors) / len(samples), 6) if samples else None,
        "recovery_s": _round(max(s.done for s in after_kill) - killed_at) if after_kill else 0.0,
        "rejoin_s": _round(rejoined.done - back_at) if rejoined else None,
        "rps": round(len(samples) / max(s.done for s in samples)) if samples else None,
        "retries": sum(v for k, v in metrics.items() if k.startswith("edgeway_upstream_retries_total")),
        "breaker_opened": sum(
            v
            for k, v in metrics.items()
            if k.startswith("edgeway_breaker_transitions_total") and "to=open" in k
        ),
        "events": [f"{e.get('event')}: {e.get('message')}" for e in log],
    }


async def hang_scenario(
    workdir: Path,
    *,
    connections: int = 8,
    before: float = 1.0,
    hang: float = 3.0,
    after: float = 2.0,
    rate: float | None = None,
) -> dict[str, Any]:
    """The only instance stops answering, then recovers: the breaker opens, answers fast, closes."""
    port, gport, admin = reserved_port(), reserved_port(), reserved_port()
    cfg = gateway_config(
        gport,
        admin,
        [port],
        timeouts={"connect": "250ms", "first_byte": "300ms", "total": "2s"},
        breaker={
            "instance": {"consecutive_failures": 3, "open_for": "1s"},
            "service": {"consecutive_failures": 3, "open_for": "1s"},
        },
    )
    async with running(backend(workdir, "h", port), gateway(workdir / "hang", cfg)):
        load = Load(gport, connections, rate=rate)
        load.start()
        await asyncio.sleep(before)
        await set_mode(port, "hang", reset=True)
        hung_at = load.now()
        await asyncio.sleep(hang)
        reached = (await backend_stats(port))["requests"]
        await set_mode(port, "ok")
        recovered_at = load.now()
        await asyncio.sleep(after)
        samples = await load.stop()
        metrics = await scrape(admin)
    return _hang_figures(samples, hung_at, recovered_at, reached, metrics)


def _hang_figures(
    samples: list[Sample], hung_at: float, recovered_at: float, reached: int, metrics: dict[str, float]
) -> dict[str, Any]:
    during = [s for s in samples if hung_at <= s.sent < recovered_at]
    fast = [s for s in during if s.status == 503]
    opened = min((s.done for s in fast), default=None)
    closed = min((s.done for s in samples if s.ok and s.sent >= recovered_at), default=None)
    return {
        "requests_during_hang": len(during),
        "answered_fast": len(fast),
        "timed_out": sum(1 for s in during if s.status == 504),
        "hung_instance_reached": reached,
        "open_s": _round(opened - hung_at) if opened is not None else None,
        "fast_p50_ms": _ms(percentile([s.latency for s in fast], 50)),
        "fast_p99_ms": _ms(percentile([s.latency for s in fast], 99)),
        "close_s": _round(closed - recovered_at) if closed is not None else None,
        "errors_after_close": sum(1 for s in samples if closed is not None and s.sent > closed and not s.ok),
        "breaker_transitions": {
            k.split("{", 1)[1].rstrip("}"): v
            for k, v in metrics.items()
            if k.startswith("edgeway_breaker_transitions_total")
        },
    }


async def flaky_scenario(
    workdir: Path,
    *,
    connections: int = 8,
    duration: float = 4.0,
    budget_percent: float = 20.0,
    rate: float | None = None,
) -> dict[str, Any]:
    """Two instances failing half their requests with 500; retries within the budget."""
    ports = [reserved_port(), reserved_port()]
    gport, admin = reserved_port(), reserved_port()
    cfg = gateway_config(
        gport,
        admin,
        ports,
        retry={
            "attempts": 3,
            "retry_on": [500, 502, 503, 504],
            "budget": {"percent": budget_percent, "min_per_second": 10, "window": "10s"},
        },
    )
    flaky = [
        backend(workdir, f"f{i}", p, "--mode", "flaky", "--fail-ratio", "0.5", "--seed", str(i))
        for i, p in enumerate(ports)
    ]
    async with running(*flaky, gateway(workdir / f"flaky-{budget_percent:g}", cfg)):
        load = Load(gport, connections, rate=rate)
        load.start()
        await asyncio.sleep(duration)
        samples = await load.stop()
        upstream = sum([(await backend_stats(p))["requests"] for p in ports])
        metrics = await scrape(admin)
    n = len(samples)
    floor = 10 * 10  # the budget's floor: min_per_second x window retries per window
    return {
        "budget_percent": budget_percent,
        "requests": n,
        "upstream_requests": upstream,
        "retries": upstream - n,
        "amplification": round(upstream / n, 4) if n else None,
        "retry_share": round((upstream - n) / n, 4) if n else None,
        "budget_cap_share": round(budget_percent / 100 + floor / n, 4) if n else None,
        "success_rate": round(sum(s.ok for s in samples) / n, 4) if n else None,
        "budget_refusals": sum(
            v for k, v in metrics.items() if k.startswith("edgeway_retry_budget_exhausted_total")
        ),
    }


async def reload_scenario(
    workdir: Path, *, connections: int = 8, reloads: int = 50, rate: float | None = None
) -> dict[str, Any]:
    """``reloads`` config changes applied through the admin API under load; failed requests."""
    if importlib.util.find_spec(RELOAD_MODULE) is None:
        return {"skipped": f"{RELOAD_MODULE} is not available (live reload is not built in this edgeway)"}
    from edgeway.gateway.process.reload import ReloadRefused, request_reload

    port, gport, admin = reserved_port(), reserved_port(), reserved_port()
    cfg = gateway_config(gport, admin, [port], retry={"attempts": 2}, breaker={})
    cfg["reload"] = {"watch": False}  # reloads come from the admin API only, one at a time
    directory = workdir / "reload"
    refused: list[str] = []
    generation = 0
    async with running(backend(workdir, "r", port), gateway(directory, cfg)):
        load = Load(gport, connections, rate=rate)
        load.start()
        await asyncio.sleep(0.5)
        started = load.now()
        for i in range(1, reloads + 1):
            cfg["routes"][0]["proxy"]["response_headers"] = {"set": {"x-config-generation": str(i)}}
            write_config(directory, cfg)
            try:
                generation = int((await request_reload("127.0.0.1", admin))["generation"])
            except ReloadRefused as exc:
                refused.append(str(exc))
        took = load.now() - started
        await asyncio.sleep(0.5)
        samples = await load.stop()
        _, head, _ = await fetch(gport, "/after-reloads")
    return {
        "reloads": reloads,
        "refused": len(refused),
        "refusals": refused[:3],
        "generation": generation,
        "took_effect": f"x-config-generation: {reloads}".encode() in head.lower(),
        "reloads_per_s": round(reloads / took, 1) if took > 0 else None,
        "requests": len(samples),
        "failed": sum(1 for s in samples if not s.ok),
    }


# --------------------------------------------------------------------------- the benchmark


def targets(result: Mapping[str, Any]) -> list[Target]:
    kill, hang, flaky = result["kill"], result["hang"], result["flaky"]
    return [
        Target("kill_error_rate", kill.get("kill_error_rate"), "<=", 0.001),
        Target("kill errors later than 2 s", kill.get("errors_after_2s"), "<=", 0),
        Target("recovery_s", kill.get("recovery_s"), "<=", 2.0),
        Target("hang: answers while open, p99 ms", hang.get("fast_p99_ms"), "<=", 50.0),
        Target(
            "flaky: retry share within the budget",
            None if flaky.get("retry_share") is None else flaky["retry_share"] - flaky["budget_cap_share"],
            "<=",
            0.0,
        ),
        Target("reload_failed", result.get("reload_failed"), "<=", 0),
    ]


async def _run_all(workdir: Path, scale: float) -> dict[str, Any]:
    say("kill: SIGKILL one of two instances under load, then restart it")
    kill = await kill_scenario(workdir, before=2.0 * scale, down=3.0 * scale, after=3.0 * scale)
    say("hang: the only instance stops answering, then recovers")
    hang = await hang_scenario(workdir, before=1.0 * scale, hang=3.0 * scale, after=2.0 * scale)
    say("flaky: two instances failing half their requests, 20 % retry budget")
    flaky = await flaky_scenario(workdir, duration=4.0 * scale)
    say("flaky: the same with the budget at 100 % (for comparison)")
    unbounded = await flaky_scenario(workdir, duration=4.0 * scale, budget_percent=100.0)
    say("reload: 50 config reloads under load")
    reload = await reload_scenario(workdir)
    return {
        "kill_error_rate": kill["kill_error_rate"],
        "recovery_s": kill["recovery_s"],
        "reload_failed": reload.get("failed"),
        "rejoin_s": kill["rejoin_s"],
        "hang_open_s": hang["open_s"],
        "hang_fast_p99_ms": hang["fast_p99_ms"],
        "hang_close_s": hang["close_s"],
        "flaky_amplification": flaky["amplification"],
        "flaky_success_rate": flaky["success_rate"],
        "flaky_amplification_budget_100": unbounded["amplification"],
        "kill": kill,
        "hang": hang,
        "flaky": flaky,
        "flaky_budget_100": unbounded,
        "reload": reload,
    }


def run(json: bool = False, scale: float = 1.0) -> dict[str, Any]:
    """Run every fault scenario, print the figures, and return them (the ``--json`` object).

    ``scale`` stretches or shrinks every scenario's timeline (the defaults take about 30 s).
    """
    reason = unavailable_reason()
    if reason is not None:
        raise BenchError(reason)
    if scale <= 0:
        raise BenchError("scale must be positive")
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="edgeway-bench-faults-"))
    failed = False
    try:
        result = asyncio.run(_run_all(workdir, scale))
    except BenchError:
        failed = True
        raise
    finally:
        if failed:
            say(f"[red]a scenario failed[/red]; logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    checked = targets(result)
    result["targets"] = targets_dict(checked)
    result["failed"] = False
    result["details"] = {
        "machine": machine(),
        "scale": scale,
        "command": " ".join(["edgeway", *sys.argv[1:]]),
    }
    report(result, checked, as_json=json)
    return result


def report(result: Mapping[str, Any], checked: Sequence[Target], *, as_json: bool) -> None:
    """Print the result: the JSON object, or a table of each scenario's figures and the targets."""
    emit_scenarios(
        result,
        checked,
        as_json=as_json,
        title="edgeway bench faults",
        scenarios=("kill", "hang", "flaky", "flaky_budget_100", "reload"),
        hidden=("events",),
    )
