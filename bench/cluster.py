"""``./dev bench cluster``: the shop on three "nodes" of one machine, while nodes fail.

Three network namespaces on a bridge play three machines (:mod:`bench.cluster_net`). On them: a
3-node NATS cluster with JetStream and every stream at 3 replicas (:mod:`bench.cluster_nats`),
two edgeway gateways, the security service and the shop's services — catalog, orders,
inventory, payments, notifications — each on two nodes (:mod:`bench.cluster_nodes`), storing in
PostgreSQL, which stays in the root namespace as a database outside the cluster would
(:mod:`bench.cluster_pg`). A client in the root namespace logs in, then places orders and reads
through both gateways at a steady pace, trying the other gateway when one fails
(:mod:`bench.cluster_load`), while a probe consumer records every order event.

After a quiet baseline the run does, with a calm period after each:

1. ``nats-kill``: SIGKILL the NATS server of n3, start it again ``--fault-s`` later;
2. ``node-kill``: SIGKILL everything on n2 (its NATS server, a gateway, orders, payments,
   notifications), start it all again ``--fault-s`` later, as a rebooted machine would;
3. ``partition``: cut n1 off the network (its link down) and join it again ``--fault-s`` later.

Then it lets the sagas and the outboxes drain and reads the databases. Top-level keys
(:mod:`bench.cluster_score` says exactly how each is computed): ``lost_events``,
``duplicate_effects``, ``error_rate``, ``recovery_s`` (``max`` and ``per_fault``), ``targets``,
``failed`` (a target missed), ``details``.

Needs root and ``ip netns`` (it refuses otherwise, saying so), socat, PostgreSQL on
127.0.0.1:5432. Everything it creates — namespaces, links, processes, databases — is removed at
the end, on Ctrl-C and on SIGTERM; ``--clean`` removes what a SIGKILLed run left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json as jsonlib
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from bench import cluster_net, cluster_pg, cluster_score
from bench.cluster_load import EventProbe, Shopper
from bench.cluster_nats import create_buckets, wait_cluster
from bench.cluster_net import Network, Node, Teardown
from bench.cluster_nodes import (
    PLACEMENT,
    SERVICES,
    Keeper,
    NodeProcess,
    Topology,
    close_checks,
    outside_priority,
)
from bench.cluster_score import Delivery, Facts, Fault, Op
from bench.errors import BenchError
from bench.gateway import unavailable_reason
from bench.harness import machine
from bench.legs import say
from bench.report import Target, print_targets, targets_dict
from edgeway.demo.plan import DEFAULT_PORTS

REGISTRY_TTL_S = 15.0  # what the demo plan gives the services (EDGEWAY_REGISTRY_TTL)
STOCK = 1_000_000  # units per product: a run never sells out
START_TIMEOUT_S = 240.0  # a dozen Python services importing at once on a busy 2-core machine
SETTLE_S = 5.0  # after waiting for a slow restart, this long before the next fault


@dataclass(frozen=True)
class Settings:
    baseline_s: float = 10.0
    fault_s: float = 6.0
    calm_s: float = 15.0
    checkouts_per_s: float = 4.0
    reads_per_s: float = 8.0
    drain_s: float = 90.0
    subnet: str = "10.77.0.0/24"
    keep: bool = False


def run(
    json: bool = False,
    baseline_s: float = 10.0,
    fault_s: float = 6.0,
    calm_s: float = 15.0,
    checkouts_per_s: float = 4.0,
    reads_per_s: float = 8.0,
    subnet: str = "10.77.0.0/24",
    keep: bool = False,
    clean: bool = False,
) -> dict[str, Any]:
    cluster_net.preflight()
    removed = _remove_leftovers()
    if clean:
        message = (
            f"removed {len(removed)} leftover(s): {', '.join(removed)}" if removed else "nothing left over"
        )
        print(jsonlib.dumps({"removed": removed}) if json else message)
        return {"removed": removed}
    if reason := unavailable_reason():
        raise BenchError(reason)
    settings = Settings(baseline_s, fault_s, calm_s, checkouts_per_s, reads_per_s, subnet=subnet, keep=keep)
    outside_priority()
    run_dir = Path(tempfile.mkdtemp(prefix="edgeway-bench-cluster-"))
    teardown = Teardown()
    teardown.install()
    kept = True
    try:
        result = asyncio.run(_rehearse(settings, run_dir, teardown))
        kept = keep
    finally:
        teardown.run()
        teardown.uninstall()
        if kept:
            say(f"logs kept in {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
    if teardown.errors:
        result["details"]["cleanup_errors"] = teardown.errors
    if json:
        print(jsonlib.dumps(result))
    else:
        _print(result)
    return result


def _remove_leftovers() -> list[str]:
    removed = cluster_net.remove_stale()
    try:
        stale = asyncio.run(cluster_pg.stale_databases(cluster_net._alive))
        if stale:
            asyncio.run(cluster_pg.drop_databases(stale))
            removed += stale
    except OSError:
        pass  # no PostgreSQL: the run says so when it needs it
    return removed


# --------------------------------------------------------------------------- the run


class Clock:
    """The run's one clock: seconds since the load's set-up, and the wall-clock time it began
    (the services stamp their records with wall-clock time)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()

    def __call__(self) -> float:
        return time.monotonic() - self.t0


async def _rehearse(settings: Settings, run_dir: Path, teardown: Teardown) -> dict[str, Any]:
    try:
        return await _rehearsal(settings, run_dir, teardown)
    finally:
        await close_checks()


async def _rehearsal(settings: Settings, run_dir: Path, teardown: Teardown) -> dict[str, Any]:
    network = Network(settings.subnet)
    tag = network.tag
    say(
        f"network: bridge {network.bridge} {network.root_ip}, nodes "
        + ", ".join(f"{n.name}={n.ip}" for n in network.nodes)
    )
    network.up(teardown)
    cluster_pg.start_forwarder(network.root_ip, run_dir, teardown)
    databases = await cluster_pg.create_databases(tag, ["security", *SERVICES])
    if settings.keep:
        say(f"databases {', '.join(databases)} are kept (`python -m bench cluster --clean` drops them)")
    else:
        teardown.push("drop the run's databases", lambda: asyncio.run(cluster_pg.drop_databases(databases)))

    topo = Topology(network, run_dir, tag, PLACEMENT)
    everything = [*topo.nats, *([topo.security] if topo.security else []), *topo.services, *topo.gateways]
    teardown.push("kill the run's processes", lambda: _kill_all(everything))

    say("starting the NATS cluster (3 nodes, JetStream)")
    await _start(topo.nats, 60)
    await wait_cluster(topo.addresses)
    await create_buckets(topo.addresses, {"shop_registry": REGISTRY_TTL_S, "shop_config": None})
    say("starting the security service, then the shop's services on their nodes")
    assert topo.security is not None
    await _start([topo.security], START_TIMEOUT_S)
    await _start(topo.services, START_TIMEOUT_S)
    initial_stock = await cluster_pg.raise_stock(tag, STOCK)
    await _wait_catalog_copies(topo)
    say("starting the gateways")
    await _start(topo.gateways, START_TIMEOUT_S)

    clock = Clock()
    keeper = Keeper(everything, clock)
    keeping = asyncio.create_task(keeper.run())
    sessions: list[dict[str, Any]] = []
    sampling = asyncio.create_task(_sample_sessions(tag, clock, sessions))
    probe = EventProbe(topo.nats_url, clock)
    await probe.start()
    shopper = Shopper(
        topo.gateway_urls, clock, checkouts_per_s=settings.checkouts_per_s, reads_per_s=settings.reads_per_s
    )
    try:
        await shopper.login()
        await _wait_routes(shopper, topo)
        say("warming up: a few orders through each gateway, until confirmed")
        await shopper.warm_up(probe)
        faults = await _load_and_faults(settings, network, topo, shopper, clock)
        say(f"load stopped: {len(shopper.ops)} operations; draining the sagas and outboxes")
        facts, deliveries, drained = await _drain(
            tag, initial_stock, topo, shopper.ops, probe, clock, settings.drain_s
        )
    finally:
        keeping.cancel()
        sampling.cancel()
        await shopper.close()
        await probe.stop()
    _save(clock.wall0, run_dir, shopper.ops, deliveries, faults, keeper.restarts, sessions)
    return _result(
        settings,
        topo,
        shopper.ops,
        deliveries,
        faults,
        facts,
        drained,
        keeper.restarts,
        shopper.retry_report(),
    )


async def _sample_sessions(tag: str, clock: Clock, into: list[dict[str, Any]]) -> None:
    """Once a second, the database sessions busy in a transaction (see cluster_pg.activity)."""
    while True:
        at = round(clock(), 2)
        with contextlib.suppress(OSError):
            into += [{"at": at, **row} for row in await cluster_pg.activity(tag)]
        await asyncio.sleep(1.0)


def _kill_all(processes: list[NodeProcess]) -> None:
    for p in processes:
        p.kill()


async def _start(processes: list[NodeProcess], timeout: float) -> None:
    for p in processes:
        p.start()
    await asyncio.gather(*(p.wait_ready(timeout) for p in processes))


async def _wait_catalog_copies(topo: Topology, timeout: float = 60.0) -> None:
    """Orders prices from its copy of the catalog: wait until every orders instance has it."""
    from edgeway.demo.shop.common.demo_data import PRODUCTS

    last = PRODUCTS[-1].sku
    port = DEFAULT_PORTS["orders"]
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as http:
        for p in topo.services:
            if p.name != "orders":
                continue
            while True:
                try:
                    if (await http.get(f"http://{p.node.ip}:{port}/catalog-copy/{last}")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"orders@{p.node.name} did not get the catalog copy within {timeout:.0f} s"
                    )
                await asyncio.sleep(0.3)


async def _wait_routes(shopper: Shopper, topo: Topology, timeout: float = 60.0) -> None:
    """Until both gateways have found the services (orders answers 404 for an unknown order)."""
    deadline = time.monotonic() + timeout
    headers = {"authorization": f"Bearer {shopper.token}"}
    async with httpx.AsyncClient(timeout=3.0) as http:
        for url in topo.gateway_urls:
            while True:
                try:
                    orders = await http.get(f"{url}/api/orders/ord_0000000000000000", headers=headers)
                    products = await http.get(f"{url}/api/products")
                    if orders.status_code == 404 and products.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"the gateway at {url} does not reach the services")
                await asyncio.sleep(0.3)


async def _load_and_faults(
    settings: Settings, network: Network, topo: Topology, shopper: Shopper, clock: Clock
) -> list[Fault]:
    stop = asyncio.Event()
    load = asyncio.create_task(shopper.run(stop))
    faults: list[Fault] = []
    n1, n2, n3 = (network.node(n) for n in ("n1", "n2", "n3"))
    say(
        f"steady load: {settings.checkouts_per_s:g} checkouts/s + {settings.reads_per_s:g} reads/s, "
        f"baseline {settings.baseline_s:g} s"
    )
    try:
        await asyncio.sleep(settings.baseline_s)
        scenarios: list[tuple[str, Callable[[], None], Callable[[], list[NodeProcess]]]] = [
            (
                "nats-kill",
                lambda: _kill(topo, n3, nats_only=True),
                lambda: _restart(topo, n3, nats_only=True),
            ),
            ("node-kill", lambda: _kill(topo, n2), lambda: _restart(topo, n2)),
            ("partition", lambda: network.cut(n1), lambda: _join(network, n1)),
        ]
        for name, begin, undo in scenarios:
            say(f"fault {name}")
            start = clock()
            begin()
            await asyncio.sleep(settings.fault_s)
            end = clock()
            restarted = undo()
            back = asyncio.create_task(_wait_back(restarted, clock))
            await asyncio.sleep(settings.calm_s)
            if not back.done():
                # Faults one at a time: a node still starting when the next one fails would
                # make two nodes of three gone at once, which is another rehearsal.
                say(f"{name}: waiting for the restarted processes before going on")
            back_s = await back
            faults.append(Fault(name, start, end, None if back_s is None else round(back_s - end, 2)))
            if restarted:
                say(f"{name}: restarted processes ready {faults[-1].back_s} s after the restart")
            if clock() - end > settings.calm_s + 1:
                await asyncio.sleep(SETTLE_S)
    finally:
        stop.set()
        await load
    return faults


async def _wait_back(processes: list[NodeProcess], clock: Clock) -> float | None:
    """When every restarted process answered its readiness check (None: not within the start
    timeout). A process that exits meanwhile is started again by the Keeper, so keep asking."""
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = list(processes)
    while waiting:
        waiting = [p for p in waiting if not await p.ready()]
        if time.monotonic() > deadline:
            return None
        if waiting:
            await asyncio.sleep(0.25)
    return clock()


def _kill(topo: Topology, node: Node, *, nats_only: bool = False) -> None:
    if nats_only:
        for p in topo.nats:
            if p.node == node:
                p.kill()
        return
    cluster_net.kill_namespace_processes(node.ns)  # everything in it, as a dead machine
    for p in topo.on(node):
        p.kill()  # reap


def _restart(topo: Topology, node: Node, *, nats_only: bool = False) -> list[NodeProcess]:
    processes = [p for p in topo.on(node) if p.name == "nats" or not nats_only]
    for p in processes:
        p.start()
    return processes


def _join(network: Network, node: Node) -> list[NodeProcess]:
    network.join(node)
    return []


CONSUMERS = ("probe", "notifications")


async def _drain(
    tag: str,
    initial_stock: dict[str, int],
    topo: Topology,
    ops: list[Op],
    probe: EventProbe,
    clock: Clock,
    timeout: float,
) -> tuple[Facts, list[Delivery], bool]:
    """Read the databases until every order is final, every event is out of the outbox and at
    every consumer (or the timeout): then the figures are about what happened, not about what
    was still in flight. Returns the last read, the deliveries and whether it settled."""
    placed = {op.order_id for op in ops if op.order_id}
    deadline = time.monotonic() + timeout
    while True:
        seen = list(probe.deliveries)  # before the databases: see _settled
        facts = await cluster_pg.read_facts(tag, initial_stock, topo.maildirs(), clock.wall0)
        deliveries = seen + cluster_score.consumer_deliveries(facts)
        settled = _settled(facts, deliveries, placed)
        if settled or time.monotonic() > deadline:
            return facts, deliveries, settled
        await asyncio.sleep(1.0)


def _settled(facts: Facts, deliveries: list[Delivery], placed: set[str]) -> bool:
    status = {order_id: s for order_id, s, _key in facts.orders}
    if any(status.get(order_id) not in cluster_score.FINAL for order_id in placed):
        return False
    if any(sent is None for *_rest, sent in facts.published):
        return False
    if cluster_score.lost_events(facts, deliveries, CONSUMERS)["lost"]:
        return False
    finals, _cancelled = cluster_score.final_times(deliveries, CONSUMERS)
    return placed <= finals.keys()


# --------------------------------------------------------------------------- the result


def _result(
    settings: Settings,
    topo: Topology,
    ops: list[Op],
    deliveries: list[Delivery],
    faults: list[Fault],
    facts: Facts,
    drained: bool,
    restarts: list[dict[str, Any]],
    client: dict[str, Any],
) -> dict[str, Any]:
    events = cluster_score.lost_events(facts, deliveries, CONSUMERS)
    effects = cluster_score.duplicate_effects(facts, ops)
    errors = cluster_score.error_rate(ops, faults)
    recovery, recovery_details = cluster_score.recovery(ops, deliveries, CONSUMERS, faults)
    targets = _targets(events["lost"], effects["total"], errors["rate"], recovery["max"])
    first = min(f.start for f in faults) if faults else math.inf
    return {
        "lost_events": events["lost"],
        "duplicate_effects": effects["total"],
        "error_rate": errors["rate"],
        "recovery_s": recovery,
        "targets": targets_dict(targets),
        "failed": any(t.met is not True for t in targets),
        "details": {
            "events": events,
            "effects": effects,
            "consistency": cluster_score.consistency(facts, ops),
            "errors": errors,
            "client_retries": client,
            "recovery": recovery_details,
            "drained": drained,
            "restarts": restarts,
            "load": {
                "checkouts_per_s": settings.checkouts_per_s,
                "reads_per_s": settings.reads_per_s,
                "operations": len(ops),
                "checkouts": sum(1 for op in ops if op.kind == "checkout"),
                "baseline_ms": _baseline(ops, first),
            },
            "timeline_s": {
                "baseline": settings.baseline_s,
                "fault": settings.fault_s,
                "calm": settings.calm_s,
            },
            "placement": {node: list(what) for node, what in PLACEMENT.items()},
            "database": "PostgreSQL in the root namespace, one database per service, reached from the "
            "nodes through socat on the bridge address",
            "nats_url": topo.nats_url,
            "machine": machine(),
        },
    }


def _save(
    wall0: float,
    run_dir: Path,
    ops: list[Op],
    deliveries: list[Delivery],
    faults: list[Fault],
    restarts: list[dict[str, Any]],
    sessions: list[dict[str, Any]],
) -> None:
    """Everything recorded, for a second look at a run kept with --keep."""
    records = {
        "wall0": wall0,
        "ops": [dataclasses.asdict(op) for op in ops],
        "deliveries": [dataclasses.asdict(d) for d in deliveries],
        "faults": [dataclasses.asdict(f) for f in faults],
        "restarts": restarts,
        "sessions": sessions,
    }
    (run_dir / "records.json").write_text(jsonlib.dumps(records))


def _baseline(ops: list[Op], before: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("checkout", "read"):
        latencies = sorted(op.latency * 1000 for op in ops if op.kind == kind and op.ok and op.end < before)
        if len(latencies) >= 2:
            q = statistics.quantiles(latencies, n=100, method="inclusive")
            out[kind] = {"p50": round(q[49], 1), "p99": round(q[98], 1), "n": len(latencies)}
    return out


def _targets(lost: int, duplicates: int, rate: float | None, recovery: float | None) -> list[Target]:
    return [
        Target("lost_events", float(lost), "<=", 0),
        Target("duplicate_effects", float(duplicates), "<=", 0),
        Target("error_rate", rate, "<=", cluster_score.ERROR_RATE_TARGET),
        Target("recovery_s", recovery, "<=", cluster_score.RECOVERY_TARGET_S),
    ]


def _print(result: dict[str, Any]) -> None:
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    d = result["details"]
    console.print("[bold]cluster rehearsal[/bold]: 3 nodes, NATS R3, 2 gateways, the shop on 2 nodes each")
    console.print(
        f"  operations {d['load']['operations']} ({d['load']['checkouts']} checkouts); "
        f"events published {d['events']['published']}, lost {result['lost_events']}; "
        f"duplicate effects {result['duplicate_effects']} {d['effects']}"
    )
    console.print(
        f"  error rate during faults {result['error_rate']} "
        f"({d['errors']['failed_during_faults']}/{d['errors']['during_faults']}, "
        f"retried {d['errors']['retried_during_faults']})"
    )
    for name, seconds in result["recovery_s"]["per_fault"].items():
        f = d["recovery"]["faults"][name]
        console.print(
            f"  {name}: recovered in {seconds} s (requests {f['requests_s']} s, events {f['events_s']} s; "
            f"{f['why']})",
            markup=False,
        )
    print_targets(
        console, [Target(name, t["value"], t["op"], t["limit"]) for name, t in result["targets"].items()]
    )
    m = d["machine"]
    console.print(f"[dim]machine: {m.get('cpu')}, {m.get('cores')} cores, load {m.get('loadavg_1m')}[/dim]")
