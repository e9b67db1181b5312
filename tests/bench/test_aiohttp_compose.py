from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bench.aggregate import compose_process
from bench.harness import ManagedProcess
from bench.proxy import backend_process


@pytest.fixture
def composition(tmp_path: Path) -> Iterator[ManagedProcess]:
    backends = [
        backend_process(tmp_path, port=0, name=name, delay_ms=150) for name in ("users", "orders", "offers")
    ]
    for b in backends:
        b.start()
    compose = compose_process(tmp_path, port=0, upstreams=[b.url for b in backends])
    try:
        yield compose.start()
    finally:
        compose.stop()
        for b in backends:
            b.stop()


async def test_merges_the_three_backends_and_calls_them_in_parallel(composition: ManagedProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(composition.url + "/") as warm:  # the upstream pool's first connects
            await warm.read()
        started = time.monotonic()
        async with session.get(composition.url + "/") as response:
            body = json.loads(await response.read())
        elapsed = time.monotonic() - started
    assert response.status == 200
    assert set(body) == {"users", "orders", "offers"}
    # Three 150 ms calls: in sequence they would take 450 ms.
    assert 0.15 <= elapsed < 0.35
