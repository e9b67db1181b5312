"""End-to-end event throughput: edgeway's outbox -> NATS -> idempotent inbox handler, against raw
nats-py JetStream publish/consume, on one embedded nats-server in the same run.

Producer and consumer run in separate processes in both legs, as two services would (and so the
two cores of the reference machine are both used); all use uvloop.

edgeway leg (:mod:`bench.bus_services`): the ``orders`` process writes events into its outbox on
SQLite (transactions of ``write_batch`` events, as request handlers would) and its relay, in the
same process, publishes them in pipelined batches; the ``billing`` process applies them with an
idempotent batch handler (``subscribe_batch``: one ``executemany`` of one row per event, message
ids recorded by the inbox in the same transaction). The clock runs from the first outbox write
to the last commit in billing.

raw leg: the same number of messages published from this process with ``publish_async`` (a
window of acks) and consumed by a ``raw-sub`` process with a pull consumer (fetch 500, ack
each), no database: the broker's ceiling with the plain client.

With ``repetitions`` > 1 the legs alternate (raw, edgeway, raw, …) so drift in the machine's load
spreads over both, and the medians are reported. The CPU each process spent per event is in
``details``: it shows where the time goes independently of how busy the machine was.

``gc_freeze`` (default on) calls ``gc.freeze()`` in every process of both legs once it is set up,
as a tuned service does after start-up: Python's full collections otherwise walk every object
imported at start each time enough batch objects survive (edgeway's consumer: 32 → 25 µs of CPU
per event; the raw nats-py consumer: unchanged, its heap is small). ``--no-gc-freeze`` measures
without.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.bus_services import ServiceProcess
from bench.harness import machine, median
from edgeway.process_tuning import freeze_heap

TARGET_EPS = 10_000
TARGET_RATIO = 0.6
PAYLOAD = b'{"order_id":"o-0000000","total_cents":1234}'


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (for nats-server, which reports nothing itself)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _per_event(seconds: float, events: int) -> float:
    return round(seconds / events * 1e6, 1)


async def _raw(url: str, server_pid: int, events: int, directory: Path, extra: list[str]) -> dict[str, Any]:
    import nats
    from nats.js import api

    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"RAW_{uuid.uuid4().hex[:8]}"
    await js.add_stream(api.StreamConfig(name=stream, subjects=[f"{stream}.>"]))
    await js.add_consumer(stream, api.ConsumerConfig(durable_name="raw", ack_policy=api.AckPolicy.EXPLICIT))
    consumer = ServiceProcess(
        "raw-sub", ["--url", url, "--channel", stream, "--expect", str(events), *extra], log_dir=directory
    )
    try:
        await consumer.start()
        server_cpu, cpu = _cpu_seconds(server_pid), time.process_time()
        started = time.time()
        for i in range(events):
            await js.publish_async(f"{stream}.e", PAYLOAD, headers={"Nats-Msg-Id": f"m{i}"})
        await js.publish_async_completed()
        producer_cpu = time.process_time() - cpu
        done = await consumer.finish(timeout=300)
    finally:
        consumer.kill()
        await consumer.stop()
    server_cpu = _cpu_seconds(server_pid) - server_cpu
    await js.delete_stream(stream)
    await nc.close()
    return {
        "eps": events / (done["finished"] - started),
        "cpu_us_per_event": {
            "producer": _per_event(producer_cpu, events),
            "consumer": _per_event(done["cpu"], events),
            "nats_server": _per_event(server_cpu, events),
        },
    }


async def _edgeway(
    url: str, server_pid: int, events: int, write_batch: int, directory: Path, extra: list[str]
) -> dict[str, Any]:
    run = directory / uuid.uuid4().hex[:8]
    run.mkdir()
    common = ["--url", url, "--channel", f"bench-{run.name}", *extra]
    billing = ServiceProcess(
        "billing", [*common, "--db", str(run / "billing.db"), "--expect", str(events)], log_dir=run
    )
    orders = ServiceProcess(
        "orders",
        [*common, "--db", str(run / "orders.db"), "--events", str(events), "--write-batch", str(write_batch)],
        log_dir=run,
    )
    try:
        await billing.start()
        server_cpu = _cpu_seconds(server_pid)
        await orders.start()  # it starts writing as soon as it is ready
        produced = await orders.finish(timeout=300)
        consumed = await billing.finish(timeout=300)
    finally:
        for service in (orders, billing):
            service.kill()
            await service.stop()
    server_cpu = _cpu_seconds(server_pid) - server_cpu
    return {
        "eps": events / (consumed["finished"] - produced["started"]),
        "writes_s": round(produced["wrote_at"] - produced["started"], 3),
        "cpu_us_per_event": {
            "producer": _per_event(produced["cpu"], events),
            "consumer": _per_event(consumed["cpu"], events),
            "nats_server": _per_event(server_cpu, events),
        },
    }


async def _main(events: int, write_batch: int, repetitions: int, gc_freeze: bool) -> dict[str, Any]:
    from edgeway.bus.embedded import EmbeddedNats

    extra = ["--gc-freeze"] if gc_freeze else []
    if gc_freeze:
        freeze_heap()  # this process is the raw leg's publisher

    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-bus-"))
    raw_runs: list[dict[str, Any]] = []
    edgeway_runs: list[dict[str, Any]] = []
    try:
        async with EmbeddedNats(port=0, data_dir=directory / "nats") as server:
            assert server.process is not None
            pid = server.process.pid
            for _ in range(repetitions):
                raw_runs.append(await _raw(server.url, pid, events, directory, extra))
                edgeway_runs.append(await _edgeway(server.url, pid, events, write_batch, directory, extra))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    raw_eps = median([r["eps"] for r in raw_runs])
    edgeway_eps = median([r["eps"] for r in edgeway_runs])
    ratio = edgeway_eps / raw_eps if raw_eps else 0.0
    return {
        "events": events,
        "repetitions": repetitions,
        "edgeway_eps": round(edgeway_eps),
        "raw_eps": round(raw_eps),
        "ratio": round(ratio, 3),
        "target_eps": TARGET_EPS,
        "target_ratio": TARGET_RATIO,
        "meets_targets": edgeway_eps >= TARGET_EPS and ratio >= TARGET_RATIO,
        "details": {
            "edgeway_runs": [{**r, "eps": round(r["eps"])} for r in edgeway_runs],
            "raw_runs": [{**r, "eps": round(r["eps"])} for r in raw_runs],
            "write_batch": write_batch,
            "gc_freeze": gc_freeze,
            "machine": machine(),
        },
    }


def run(
    json: bool = False,
    events: int = 20_000,
    write_batch: int = 500,
    repetitions: int = 1,
    gc_freeze: bool = True,
) -> dict[str, Any]:
    """Run both legs and print the result (a table, or one JSON object with ``json``)."""
    result = asyncio.run(_main(events, write_batch, repetitions, gc_freeze))
    if json:
        print(jsonlib.dumps(result))
        return result
    print(f"events per leg          {result['events']:>10,}  (x{repetitions}, medians)")
    print(f"edgeway (outbox->inbox) {result['edgeway_eps']:>10,} events/s  (target {TARGET_EPS:,})")
    print(f"raw nats-py JetStream   {result['raw_eps']:>10,} events/s")
    print(f"ratio                   {result['ratio']:>10}  (target {TARGET_RATIO})")
    for leg in ("edgeway", "raw"):
        for i, one in enumerate(result["details"][f"{leg}_runs"]):
            cpu = ", ".join(f"{k} {v}" for k, v in one["cpu_us_per_event"].items())
            print(f"  {leg} run {i + 1}: {one['eps']:,} events/s; CPU µs/event: {cpu}")
    host = result["details"]["machine"]
    print(f"machine: {host['cpu']}, {host['cores']} cores, load average {host['loadavg_1m']} at the end")
    return result
