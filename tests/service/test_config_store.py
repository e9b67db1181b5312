from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest

from conftest import dead_port, require
from edgeway.service.config_store import ConfigStore
from edgeway.service.errors import ConfigUnavailableError

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
async def bucket() -> AsyncIterator[Any]:
    require("nats")
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    name = f"cfg_{uuid.uuid4().hex[:12]}"
    kv = await js.create_key_value(bucket=name, history=5)
    yield kv
    await js.delete_key_value(name)
    await nc.close()


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_values_arrive_decoded_at_start(bucket: Any, tmp_path: Path) -> None:
    await bucket.put("db.pool_size", b"10")
    await bucket.put("greeting", b"hello")  # not JSON: kept as a string
    await bucket.put("limits", b'{"rps": 5}')
    store = ConfigStore(bucket._name, nats_url=NATS_URL, cache_dir=tmp_path)
    await store.start()
    try:
        assert store.source == "store"
        assert store.snapshot() == {"db.pool_size": 10, "greeting": "hello", "limits": {"rps": 5}}
    finally:
        await store.stop()


async def test_updates_and_deletes_arrive_live_and_reach_listeners(bucket: Any, tmp_path: Path) -> None:
    await bucket.put("mode", b'"a"')
    store = ConfigStore(bucket._name, nats_url=NATS_URL, cache_dir=tmp_path)
    seen: list[tuple[str, Any]] = []
    store.subscribe(lambda k, v: seen.append((k, v)))
    await store.start()
    try:
        await bucket.put("mode", b'"b"')
        await wait_for(lambda: store.get("mode") == "b")
        await bucket.delete("mode")
        await wait_for(lambda: store.get("mode") is None)
        assert seen == [("mode", "a"), ("mode", "b"), ("mode", None)]
    finally:
        await store.stop()


async def test_cached_copy_is_used_when_the_store_is_unreachable(bucket: Any, tmp_path: Path) -> None:
    await bucket.put("feature.x", b"true")
    live = ConfigStore(bucket._name, nats_url=NATS_URL, cache_dir=tmp_path)
    await live.start()
    await bucket.put("feature.y", b"42")
    await wait_for(lambda: live.get("feature.y") == 42)
    await live.stop()

    closed = f"nats://127.0.0.1:{dead_port()}"
    offline = ConfigStore(bucket._name, nats_url=closed, cache_dir=tmp_path, retries=2, backoff=0.01)
    await offline.start()
    try:
        assert offline.source == "cache"
        assert offline.snapshot() == {"feature.x": True, "feature.y": 42}
    finally:
        await offline.stop()


async def test_start_fails_when_unreachable_and_nothing_cached(tmp_path: Path) -> None:
    closed = f"nats://127.0.0.1:{dead_port()}"
    store = ConfigStore("nothing", nats_url=closed, cache_dir=tmp_path, retries=2, backoff=0.01)
    with pytest.raises(ConfigUnavailableError, match="no cached copy"):
        await store.start()


async def test_missing_bucket_is_reported_by_name(tmp_path: Path) -> None:
    require("nats")
    name = f"absent_{uuid.uuid4().hex[:8]}"
    store = ConfigStore(name, nats_url=NATS_URL, cache_dir=tmp_path)
    with pytest.raises(ConfigUnavailableError, match=name):
        await store.start()
    await store.stop()


async def test_switches_from_cache_to_live_when_the_store_comes_back(bucket: Any, tmp_path: Path) -> None:
    await bucket.put("k", b"1")
    first = ConfigStore(bucket._name, nats_url=NATS_URL, cache_dir=tmp_path)
    await first.start()
    await first.stop()
    await bucket.put("k", b"2")

    store = ConfigStore(bucket._name, nats_url=NATS_URL, cache_dir=tmp_path, recover_interval=0.1)
    # Simulate an outage at start-up: the first attempts hit a closed port.
    store.nats_url = f"nats://127.0.0.1:{dead_port()}"
    store.retries = 1
    await store.start()
    assert store.source == "cache"
    assert store.get("k") == 1
    store.nats_url = NATS_URL
    try:
        await wait_for(lambda: store.source == "store")
        assert store.get("k") == 2
    finally:
        await store.stop()
