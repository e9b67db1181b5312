"""Every stream and KV bucket the kit and the security service declare follows the replica
settings (``bus_replicas``, ``kv_replicas``), found by the cluster rehearsal to be fixed at one.

The NATS on 4222 is a single server: it keeps one-replica streams and refuses any other count
("replicas > 1 not supported in non-clustered mode"). That refusal is what shows the setting
reached the server; a one-replica declaration is read back from the stream's config.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from sqlalchemy import MetaData

from conftest import delete_nats_streams, require
from edgeway.bus.errors import BusError
from edgeway.discovery.errors import RegistryError
from edgeway.discovery.registry import Registry
from edgeway.security.revocation import TokenRevokedEvent
from edgeway.security_service.events import RevocationEvents
from edgeway.service import Service, ServiceSettings
from edgeway.service.config_store import ConfigStore
from edgeway.service.database import Database
from edgeway.service.errors import ConfigUnavailableError

NATS = "nats://127.0.0.1:4222"
NOT_CLUSTERED = "replicas > 1 not supported"

pytestmark = pytest.mark.xdist_group("nats-replicas")


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require("nats")
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await delete_nats_streams(name)
    await delete_nats_streams(f"KV_{name}")


@pytest.fixture
async def nc() -> AsyncIterator[NatsClient]:
    require("nats")
    client = await nats.connect(NATS)
    yield client
    await client.close()


async def _replicas(nc: NatsClient, stream_prefix: str) -> dict[str, int]:
    found = await nc.jetstream().streams_info()
    return {
        i.config.name or "": i.config.num_replicas or 1
        for i in found
        if (i.config.name or "").lower().startswith(stream_prefix.lower() + "_")
    }


def _listener(prefix: str, tmp_path: Path, replicas: int) -> Service:
    settings = ServiceSettings(
        data_dir=tmp_path,
        nats_url=NATS,
        bus_prefix=prefix,
        bus_replicas=replicas,
        jwks_url="http://127.0.0.1:9/.well-known/jwks.json",
        revocations_url="",
    )
    return Service("listener", settings=settings, channels=[])  # only the kit's revocations


async def test_the_kits_revocations_channel_follows_bus_replicas(
    prefix: str, nc: NatsClient, tmp_path: Path
) -> None:
    one = _listener(prefix, tmp_path, 1)
    async with one.bus:
        pass
    stream = f"{prefix.upper()}_revocations"
    assert await _replicas(nc, prefix) == {stream: 1, f"{prefix.upper()}_DLQ_revocations": 1}

    three = _listener(f"{prefix}b", tmp_path, 3)
    assert three.bus.channel("revocations").replicas == 3
    try:
        with pytest.raises(BusError, match=NOT_CLUSTERED):
            await three.bus.start()
        await three.bus.stop()
    finally:
        await delete_nats_streams(f"{prefix}b")


async def test_the_security_services_channels_follow_bus_replicas(prefix: str, tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/security.db", MetaData())
    events = RevocationEvents(NATS, prefix, database, replicas=3)
    assert {c: events.bus.channel(c).replicas for c in ("revocations", "users")} == {
        "revocations": 3,
        "users": 3,
    }
    await events.bus.start()
    try:
        # Channels are declared when first used: publishing declares the revocations stream.
        with pytest.raises(BusError, match=NOT_CLUSTERED):
            await events.bus.publish(TokenRevokedEvent(jti="j-1", exp=time.time() + 60))
    finally:
        await events.bus.stop()
    await database.dispose()


async def test_the_registry_bucket_is_created_with_its_replicas(prefix: str, nc: NatsClient) -> None:
    registry = Registry(nc, bucket=f"{prefix}_registry", ttl=15, replicas=1)
    await registry.open()
    info = await nc.jetstream().stream_info(f"KV_{prefix}_registry")
    assert (info.config.num_replicas, info.config.max_age) == (1, 15)

    with pytest.raises(RegistryError, match=NOT_CLUSTERED):
        await Registry(nc, bucket=f"{prefix}_registry3", replicas=3).open()
    with pytest.raises(ValueError, match="1, 3 or 5"):
        Registry(nc, bucket=f"{prefix}_registry2", replicas=2)


async def test_the_config_bucket_is_created_with_its_replicas(prefix: str, tmp_path: Path) -> None:
    store = ConfigStore(
        f"{prefix}_config", nats_url=NATS, cache_dir=tmp_path, create_bucket=True, retries=1, replicas=3
    )
    with pytest.raises(ConfigUnavailableError, match=NOT_CLUSTERED):
        await store.start()
    await store.stop()


def test_kv_replicas_default_to_bus_replicas() -> None:
    assert ServiceSettings(bus_replicas=3).bucket_replicas() == 3
    assert ServiceSettings(bus_replicas=3, kv_replicas=1).bucket_replicas() == 1
    assert ServiceSettings().bucket_replicas() == 1
