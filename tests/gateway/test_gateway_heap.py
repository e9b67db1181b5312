"""A gateway process freezes its start-up heap once serving (edgeway.process_tuning.freeze_heap)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import asyncio, gc
from edgeway.gateway.config import validate_config
from edgeway.gateway.process.serve import run

cfg = validate_config({{
    "name": "heap", "listen": {{"host": "127.0.0.1", "port": 0}}, "admin": None,
    "services": {{"b": {{"instances": ["http://127.0.0.1:9"]}}}},
    "routes": [{{"id": "r", "match": {{"path": "/**"}}, "proxy": {{"service": "b"}}}}],
}})

async def main():
    stop = asyncio.Event()
    async def watch():
        while gc.get_freeze_count() == 0 and not stop.is_set():
            await asyncio.sleep(0.01)
        print(gc.get_freeze_count(), flush=True)
        stop.set()
    asyncio.get_running_loop().call_later(3, stop.set)
    watcher = asyncio.create_task(watch())
    await run(cfg, stop, freeze={freeze})
    await watcher

asyncio.run(main())
"""


def frozen_objects(freeze: bool) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(freeze=freeze)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # stdout also carries the gateway's JSON log lines; the probe's answer is the bare number.
    return int(next(line for line in out.stdout.splitlines() if line.strip().isdigit()))


def test_a_serving_gateway_has_frozen_its_start_up_heap() -> None:
    assert frozen_objects(True) > 10_000


def test_in_process_gateways_leave_the_heap_alone() -> None:
    assert frozen_objects(False) == 0
