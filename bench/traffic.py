"""``./dev bench traffic``: traffic shifting measured through a real gateway.

Real processes on loopback: four :mod:`bench.fault_backend` instances (``v1a``, ``v1b`` of service
``v1``; ``v2a``, ``v2b`` of ``v2``; every answer names its instance in ``X-Backend``), a fifth as
the shadow service, and ``edgeway gateway`` as a child process (access log off) with one route
per scenario. Each scenario is a function returning its figures; the top-level keys of the
result are the issue's:

- **split** (``split_error_pct``): ``requests`` GETs (10,000) on a 10/90 split between ``v1``
  and ``v2`` over keep-alive connections; the distance, in percentage points, of ``v1``'s
  measured share from its configured 10 %.
- **sticky** (``sticky_violations``): ``users`` (1,000) keys, each sent ``per_user`` (10) times
  in ``X-User`` on a sticky 50/50 split, interleaved over the connections; a violation is a
  request answered by another instance than the key's first answer (0 is the target: a key
  keeps its side *and* its instance).
- **mirror** (``mirror_added_p99_ms``): paced load (``rate`` requests/s, steady, well below
  saturation, so the figure is the mirror's effect on requests rather than a queue) on a route
  without a mirror and on a route to the same service mirroring every request to the shadow, in
  many short alternating legs (``rounds`` of ``leg_seconds`` each, ABBA order); per round, the
  p99 of the real requests with the mirror minus without, and the figure is the median of those
  per-round differences (with their quartiles). Also: the gateway's CPU per request in each (what the copies
  cost), and a paired leg in which every connection alternates between the routes (what a copy
  does to the very request it copies).
- **rollback** (``rollback_s``, ``failed_requests_during_rollback``): a strangler route moving
  from ``v1`` to ``v2`` at its first step (50 %), under steady paced load (``rate``); then both
  ``v2`` instances start answering 500 to everything. ``rollback_s``: from that moment to the
  gateway's strangler state back at 0 % (its admin API's ``/strangler``, polled every 10 ms);
  ``failed_requests_during_rollback``: the requests answered 5xx from that moment until the
  load stops (one second after the rollback: nothing fails after it). The rule judges every
  ``check_interval`` (250 ms here) over a 2 s window, once ``v2`` has served 20 requests in it.

A scenario is added by writing its function and listing it in :data:`SCENARIOS` (its
top-level figures in :data:`FIGURES`, its goals in :func:`targets`).
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.errors import BenchError
from bench.fault_load import percentile
from bench.faults import backend, fetch, gateway, http_get, running, scrape, set_mode
from bench.gateway import unavailable_reason
from bench.harness import ManagedProcess, machine, raise_fd_limit, reserved_port, tree_cpu_seconds
from bench.legs import say
from bench.report import Target, emit_scenarios, targets_dict

# The top-level figures, in the order the issue lists them (the strangler's come after).
FIGURES = (
    "split_error_pct",
    "sticky_violations",
    "mirror_added_p99_ms",
    "rollback_s",
    "failed_requests_during_rollback",
)
INSTANCES = {"v1": ("v1a", "v1b"), "v2": ("v2a", "v2b"), "shadow": ("shadow",)}
SPLIT_SHARE = 10.0  # percent of the split route's requests for v1


@dataclass
class Setup:
    """What every scenario gets: the gateway's ports and process, the run's settings."""

    port: int
    admin: int
    gateway: ManagedProcess
    workdir: Path
    settings: Mapping[str, Any]
    ports: Mapping[str, int]  # each backend instance's, by name


Scenario = Callable[[Setup], Awaitable[dict[str, Any]]]


# --------------------------------------------------------------------------- the gateway


def gateway_config(port: int, admin: int, ports: Mapping[str, int]) -> dict[str, Any]:
    def service(name: str, **extra: Any) -> dict[str, Any]:
        return {"instances": [f"http://127.0.0.1:{ports[i]}" for i in INSTANCES[name]], **extra}

    return {
        "version": 1,
        "name": "traffic-gateway",
        "listen": {"host": "127.0.0.1", "port": port},
        "admin": {"host": "127.0.0.1", "port": admin},
        "access_log": {"enabled": False},
        "reload": {"watch": False},
        "services": {"v1": service("v1"), "v2": service("v2"), "shadow": service("shadow")},
        "routes": [
            {
                "id": "split",
                "match": {"path": "/split/**"},
                "proxy": {
                    "split": [
                        {"service": "v1", "weight": SPLIT_SHARE},
                        {"service": "v2", "weight": 100 - SPLIT_SHARE},
                    ]
                },
            },
            {
                "id": "sticky",
                "match": {"path": "/sticky/**"},
                "proxy": {
                    "split": [{"service": "v1", "weight": 50}, {"service": "v2", "weight": 50}],
                    "sticky": {"header": "X-User"},
                },
            },
            {"id": "plain", "match": {"path": "/plain/**"}, "proxy": {"service": "v2"}},
            {
                "id": "mirror",
                "match": {"path": "/mirror/**"},
                "proxy": {"service": "v2", "mirror": {"service": "shadow", "fraction": 1.0}},
            },
            {
                "id": "strangle",
                "match": {"path": "/strangle/**"},
                "proxy": {"strangler": STRANGLER},
            },
        ],
    }


# The rollback scenario's rule: at its first step (50 %) until v2 fails; never advanced by time.
STRANGLER = {
    "old": "v1",
    "new": "v2",
    "steps": [50, 100],
    "step_duration": "1h",
    "min_requests": 20,
    "window": "2s",
    "check_interval": "250ms",
    "max_error_rate_increase": 0.05,
}


# --------------------------------------------------------------------------- a keep-alive client


class BadAnswer(Exception):
    pass


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, str]:
    """Send one request on a kept-alive connection: (status, X-Backend)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise BadAnswer(f"not an HTTP response: {lines[0][:60]!r}")
    length, name = 0, ""
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"x-backend":
            name = value.strip().decode()
    await reader.readexactly(length)
    return int(parts[1]), name


async def drive(port: int, requests: Sequence[bytes], connections: int) -> list[tuple[int, str]]:
    """Send ``requests`` over ``connections`` keep-alive connections, each taking the next one as
    soon as its previous answer is in: (status, X-Backend) per request, in ``requests`` order."""
    out: list[tuple[int, str]] = [(0, "")] * len(requests)
    queue = iter(range(len(requests)))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in queue:
                out[i] = await ask(reader, writer, requests[i])
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return out


def get(path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: bench\r\n{headers}\r\n".encode()


# --------------------------------------------------------------------------- scenarios


async def split_scenario(setup: Setup) -> dict[str, Any]:
    """A 10/90 split: how far the measured share is from the configured one."""
    n = int(setup.settings["requests"])
    answers = await drive(setup.port, [get(f"/split/{i}") for i in range(n)], setup.settings["connections"])
    services = Counter(name[:2] for status, name in answers if status == 200)
    answered = sum(services.values())
    share = 100 * services["v1"] / answered if answered else None
    return {
        "split_error_pct": None if share is None else round(abs(share - SPLIT_SHARE), 3),
        "requests": n,
        "failed": n - answered,
        "configured_pct": {"v1": SPLIT_SHARE, "v2": 100 - SPLIT_SHARE},
        "measured_pct": {s: round(100 * c / answered, 3) for s, c in sorted(services.items())}
        if answered
        else {},
    }


async def sticky_scenario(setup: Setup) -> dict[str, Any]:
    """Keys on a sticky split: requests answered by another instance than the key's first."""
    users, per_user = int(setup.settings["users"]), int(setup.settings["per_user"])
    keys = [f"user-{i}" for i in range(users)] * per_user  # interleaved: each round visits every key
    answers = await drive(
        setup.port, [get("/sticky/profile", f"x-user: {k}\r\n") for k in keys], setup.settings["connections"]
    )
    first: dict[str, str] = {}
    violations = failed = 0
    for key, (status, name) in zip(keys, answers, strict=True):
        if status != 200:
            failed += 1
            continue
        if first.setdefault(key, name) != name:
            violations += 1
    per_instance = Counter(first.values())
    return {
        "sticky_violations": violations,
        "requests": len(keys),
        "failed": failed,
        "keys": users,
        "keys_per_instance": dict(sorted(per_instance.items())),
    }


async def _paced(setup: Setup, paths: Sequence[str]) -> tuple[dict[str, list[float]], int, float]:
    """One leg of paced load: ``mirror_connections`` keep-alive connections together sending
    ``rate`` requests/s for ``leg_seconds``, each connection going through ``paths`` in turn.
    Latencies (s) of the answered requests by path, failed requests, gateway CPU µs/request."""
    settings = setup.settings
    connections = int(settings["mirror_connections"])
    interval = connections / float(settings["rate"])
    loop = asyncio.get_running_loop()
    until = loop.time() + float(settings["leg_seconds"])
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    failed = 0
    requests = [get(path) for path in paths]

    async def worker(offset: int) -> None:
        nonlocal failed
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
        try:
            turn = offset
            next_send = loop.time() + interval * offset / connections  # spread the connections
            while next_send < until:
                pause = next_send - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                next_send += interval
                path = paths[turn % len(paths)]
                turn += 1
                sent = loop.time()
                status, _ = await ask(reader, writer, requests[paths.index(path)])
                if status == 200:
                    latencies[path].append(loop.time() - sent)
                else:
                    failed += 1
        finally:
            writer.close()

    cpu_before = tree_cpu_seconds(setup.gateway.pid)
    await asyncio.gather(*(worker(i) for i in range(connections)))
    cpu = tree_cpu_seconds(setup.gateway.pid) - cpu_before
    total = sum(len(v) for v in latencies.values()) + failed
    return latencies, failed, (cpu / total * 1e6) if total else 0.0


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


async def mirror_scenario(setup: Setup) -> dict[str, Any]:
    """The real requests' p99 with every request mirrored minus without, under the same load."""
    plain, mirror = "/plain/orders", "/mirror/orders"
    await _paced(setup, ["/plain/warmup", "/mirror/warmup"])  # connections, pools, caches
    # Many short legs, one route at a time, in ABBA order (plain then mirror, then mirror then
    # plain...): a busy machine's slow moments and any drift fall on both alike. Each round gives
    # one difference of p99s (its two legs are seconds apart, so they share the machine's state);
    # the figure is the median of those differences, which a burst of load in one leg cannot
    # move, unlike the difference of p99s pooled over all legs (±8 ms on a shared VM).
    legs: dict[str, list[float]] = {"plain": [], "mirror": []}
    cpu: dict[str, list[float]] = {"plain": [], "mirror": []}
    differences: list[float] = []
    failed = 0
    order = (("plain", plain), ("mirror", mirror))
    for round_ in range(int(setup.settings["rounds"])):
        p99: dict[str, float | None] = {}
        for name, path in order if round_ % 2 == 0 else order[::-1]:
            latencies, errors, cpu_us = await _paced(setup, [path])
            legs[name] += latencies[path]
            cpu[name].append(cpu_us)
            p99[name] = percentile(sorted(latencies[path]), 99)
            failed += errors
        low, high = p99["plain"], p99["mirror"]
        if low is not None and high is not None:
            differences.append((high - low) * 1000)
    # Paired: every connection alternates between the routes, so each moment delays both alike:
    # the difference is what a copy does to the very request it copies (it is sent after it).
    paired, errors, _ = await _paced(setup, [plain, mirror])
    failed += errors
    pooled = {name: percentile(sorted(values), 99) for name, values in legs.items()}
    p50 = {name: percentile(sorted(values), 50) for name, values in legs.items()}
    copies = await _copies(setup.admin, len(legs["mirror"]) + len(paired[mirror]))
    ordered = sorted(differences)
    return {
        "mirror_added_p99_ms": round(statistics.median(ordered), 3) if ordered else None,
        "round_differences_ms": [round(d, 3) for d in differences],
        "differences_iqr_ms": [round(q, 3) for q in _quartiles(ordered)] if len(ordered) >= 2 else None,
        "requests_per_leg": round(len(legs["plain"]) / max(1, int(setup.settings["rounds"]))),
        "pooled_p99_ms": {name: _ms(v) for name, v in pooled.items()},
        "p50_ms": {name: _ms(v) for name, v in p50.items()},
        "requests": {name: len(values) for name, values in legs.items()},
        "failed": failed,
        "paired_p99_ms": {
            "plain": _ms(percentile(sorted(paired[plain]), 99)),
            "mirror": _ms(percentile(sorted(paired[mirror]), 99)),
        },
        "gateway_cpu_us_per_request": {name: round(sum(v) / len(v), 1) for name, v in cpu.items() if v},
        "copies": copies,
    }


def _quartiles(ordered: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles of at least two values: how far the rounds agree."""
    q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return q1, q3


async def _copies(admin: int, expected: int, settle: float = 2.0) -> dict[str, int]:
    """The mirror's outcome counts from the gateway's metrics, once ``expected`` copies are
    counted (the last ones are sent after their requests' answers) or ``settle`` seconds passed."""
    loop = asyncio.get_running_loop()
    until = loop.time() + settle
    while True:
        metrics = await scrape(admin)
        copies = {
            key.split("outcome=")[1].split(",")[0]: int(value)
            for key, value in metrics.items()
            if key.startswith("edgeway_mirror_requests_total{")
        }
        if sum(copies.values()) >= expected or loop.time() >= until:
            return copies
        await asyncio.sleep(0.05)


async def _strangler_percent(admin: int) -> float:
    from edgeway.gateway.process.admin_auth import find_token

    status, _, body = await fetch(admin, "/strangler", find_token(admin))
    if status != 200:
        raise BenchError(f"the gateway's /strangler answered {status}: {body[:200]!r}")
    rules = {rule["route"]: rule for rule in orjson.loads(body)["rules"]}
    return float(rules["strangle"]["percent"])


async def rollback_scenario(setup: Setup) -> dict[str, Any]:
    """A strangler at 50 % whose new side starts failing: time to all traffic back on the old side."""
    settings = setup.settings
    loop = asyncio.get_running_loop()
    answers: list[tuple[float, int, str]] = []  # (time answered, status, X-Backend)
    stop = asyncio.Event()
    connections = int(settings["mirror_connections"])
    interval = connections / float(settings["rate"])

    async def worker(offset: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", setup.port)
        request = get("/strangle/profile")
        try:
            next_send = loop.time() + interval * offset / connections
            while not stop.is_set():
                pause = next_send - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
                next_send += interval
                status, name = await ask(reader, writer, request)
                answers.append((loop.time(), status, name))
        finally:
            writer.close()

    if await _strangler_percent(setup.admin) != 50.0:
        raise BenchError("the strangler route is not at its first step (50 %) before the rollback")
    load = asyncio.gather(*(worker(i) for i in range(connections)))
    try:
        await asyncio.sleep(1.0)  # steady at 50 %: both sides serving
        started = loop.time()
        for name in INSTANCES["v2"]:  # every request answered 500
            status, body = await http_get(setup.ports[name], "/_control?mode=flaky&fail_ratio=1")
            if status != 200:
                raise BenchError(f"backend {name} refused to fail: {body[:200]!r}")
        while await _strangler_percent(setup.admin) != 0.0:
            if loop.time() - started > 60:
                raise BenchError("no rollback within 60 s of the new side failing")
            await asyncio.sleep(0.01)
        rolled_back = loop.time()
        await asyncio.sleep(1.0)  # the requests in flight at the rollback, and proof nothing fails after
    finally:
        stop.set()
        await load
        for name in INSTANCES["v2"]:
            await set_mode(setup.ports[name], "ok")
    after = [(at, status, name) for at, status, name in answers if at >= started]
    settled = rolled_back + 0.1  # a request in flight at the rollback may still be the new side's
    last_new = max((at for at, _, name in after if name.startswith("v2")), default=started)
    return {
        "rollback_s": round(rolled_back - started, 3),
        "failed_requests_during_rollback": sum(1 for _, status, _ in after if status >= 500),
        "last_new_side_answer_s": round(last_new - started, 3),
        "requests_after_failure_began": len(after),
        "failed_after_rollback": sum(1 for at, status, _ in after if status >= 500 and at > settled),
        "rate": float(settings["rate"]),
        "rule": STRANGLER,
    }


SCENARIOS: dict[str, Scenario] = {
    "split": split_scenario,
    "sticky": sticky_scenario,
    "mirror": mirror_scenario,
    "rollback": rollback_scenario,
}


# --------------------------------------------------------------------------- the benchmark


def targets(result: Mapping[str, Any]) -> list[Target]:
    return [
        Target("split_error_pct", result.get("split_error_pct"), "<=", 2.0),
        Target("sticky_violations", result.get("sticky_violations"), "<=", 0),
        Target("mirror_added_p99_ms", result.get("mirror_added_p99_ms"), "<=", 0.5),
        Target("rollback_s", result.get("rollback_s"), "<=", 10.0),
    ]


async def _run_all(workdir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    ports = {name: reserved_port() for names in INSTANCES.values() for name in names}
    port, admin = reserved_port(), reserved_port()
    backends = [backend(workdir, name, p) for name, p in ports.items()]
    gw = gateway(workdir / "gateway", gateway_config(port, admin, ports))
    result: dict[str, Any] = {}
    async with running(*backends, gw):
        setup = Setup(port, admin, gw, workdir, settings, ports)
        for name, scenario in SCENARIOS.items():
            say(f"{name}: {(scenario.__doc__ or '').strip()}")
            result[name] = await scenario(setup)
    for name in FIGURES:
        result[name] = next((r[name] for r in result.values() if isinstance(r, dict) and name in r), None)
    return {**{k: result[k] for k in FIGURES}, **{k: v for k, v in result.items() if k not in FIGURES}}


def run(
    json: bool = False,
    requests: int = 10_000,
    users: int = 1_000,
    per_user: int = 10,
    connections: int = 8,
    rate: float = 500.0,
    leg_seconds: float = 2.0,
    rounds: int = 12,
) -> dict[str, Any]:
    """Run every scenario, print the figures and return them (the ``--json`` object)."""
    reason = unavailable_reason()
    if reason is not None:
        raise BenchError(reason)
    raise_fd_limit()
    settings = {
        "requests": requests,
        "users": users,
        "per_user": per_user,
        "connections": connections,
        "mirror_connections": 4,
        "rate": rate,
        "leg_seconds": leg_seconds,
        "rounds": rounds,
    }
    workdir = Path(tempfile.mkdtemp(prefix="edgeway-bench-traffic-"))
    failed = False
    try:
        result = asyncio.run(_run_all(workdir, settings))
    except (BenchError, OSError, BadAnswer, asyncio.IncompleteReadError) as exc:
        failed = True
        say(f"[red]a scenario failed[/red]; logs kept in {workdir}")
        raise BenchError(f"traffic bench failed: {exc!r}") from exc
    finally:
        if not failed:
            shutil.rmtree(workdir, ignore_errors=True)
    checked = targets(result)
    result["targets"] = targets_dict(checked)
    # Failed requests are figures of their scenario, not a failure of the run (as in bench faults).
    result["failed"] = False
    result["details"] = {
        "machine": machine(),
        "settings": settings,
        "command": " ".join(["edgeway", *sys.argv[1:]]),
    }
    report(result, checked, as_json=json)
    return result


def report(result: Mapping[str, Any], checked: Sequence[Target], *, as_json: bool) -> None:
    """Print the result: the JSON object, or a table of each scenario's figures and the targets."""
    emit_scenarios(result, checked, as_json=as_json, title="edgeway bench traffic", scenarios=list(SCENARIOS))
