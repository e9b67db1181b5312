"""A service registry in a NATS KV bucket: instances register themselves and keep a heartbeat.

Each instance is one key, ``<service>.<instance id>``, whose value is a JSON
:class:`Instance`. The bucket is created with a max age (the TTL): every entry older than it is
removed by the server. A registered instance re-puts its entry every ``ttl / 3`` seconds, so a
live instance never ages out and one that dies without deregistering (killed, partitioned)
disappears within one TTL — no reaper process needed. A clean shutdown deletes the key at once.

Lookup reads the latest entry of every key under ``<service>.``; deleted and expired keys are
not returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from edgeway.service.errors import RegistryError

__all__ = ["Instance", "Registration", "Registry"]

_log = logging.getLogger("edgeway.service.registry")
_FAILURES = (NatsError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Instance:
    service: str
    url: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    meta: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        return f"{self.service}.{self.id}"

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: bytes) -> Instance:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            service=str(data["service"]),
            url=str(data["url"]),
            id=str(data["id"]),
            meta={str(k): str(v) for k, v in dict(data.get("meta") or {}).items()},
            started_at=float(data.get("started_at", 0.0)),
        )


class Registry:
    """The registry bucket; :meth:`open` it once per process with a connected NATS client."""

    def __init__(self, nc: NatsClient, *, bucket: str = "edgeway_registry", ttl: float = 15.0) -> None:
        if ttl < 1:
            raise ValueError("registry ttl must be at least 1 second")
        if not _valid_token(bucket):
            raise ValueError(f"registry bucket name {bucket!r} may only use letters, digits, - and _")
        self.bucket = bucket
        self.ttl = ttl
        self._nc = nc
        self._kv: KeyValue | None = None

    async def open(self) -> None:
        js = self._nc.jetstream()
        try:
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await js.create_key_value(bucket=self.bucket, ttl=self.ttl, history=1)
        except _FAILURES as exc:
            raise RegistryError(f"cannot open the registry bucket {self.bucket!r}: {exc}") from exc
        status = await self._kv.status()
        if status.ttl is not None and abs(status.ttl - self.ttl) > 0.5:
            # The bucket's max age is what expires dead instances; a heartbeat paced for a
            # different TTL would either expire live instances or keep dead ones too long.
            _log.warning(
                "registry bucket %s has ttl %.1fs; heartbeating for that instead of %.1fs",
                self.bucket,
                status.ttl,
                self.ttl,
            )
            self.ttl = status.ttl

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RegistryError("the registry is not open; call `await registry.open()` first")
        return self._kv

    async def register(self, instance: Instance) -> Registration:
        """Put the instance and keep it alive until :meth:`Registration.close`."""
        _check_names(instance)
        await self._put(instance)
        registration = Registration(self, instance)
        registration.start()
        return registration

    async def deregister(self, instance: Instance) -> None:
        try:
            await self.kv.delete(instance.key)
        except _FAILURES as exc:
            raise RegistryError(f"cannot deregister {instance.key}: {exc}") from exc

    async def lookup(self, service: str) -> list[Instance]:
        """The live instances of ``service``, oldest first."""
        if not _valid_token(service):
            raise ValueError(f"service name {service!r} may only use letters, digits, - and _")
        found: list[Instance] = []
        try:
            watcher = await self.kv.watch(f"{service}.*", ignore_deletes=True)
            try:
                async with asyncio.timeout(5):
                    async for entry in watcher:
                        if entry is None:
                            break
                        if entry.value:
                            try:
                                found.append(Instance.decode(entry.value))
                            except (ValueError, KeyError, TypeError) as exc:
                                _log.warning("skipping malformed registry entry %s: %s", entry.key, exc)
            finally:
                await watcher.stop()  # type: ignore[no-untyped-call]
        except _FAILURES as exc:
            raise RegistryError(f"cannot look up {service!r} in the registry: {exc}") from exc
        return sorted(found, key=lambda i: (i.started_at, i.id))

    async def _put(self, instance: Instance) -> None:
        try:
            await self.kv.put(instance.key, instance.encode())
        except _FAILURES as exc:
            raise RegistryError(f"cannot register {instance.key}: {exc}") from exc


class Registration:
    """A registered instance and its heartbeat task."""

    def __init__(self, registry: Registry, instance: Instance) -> None:
        self.registry = registry
        self.instance = instance
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name=f"registry-heartbeat-{self.instance.key}")

    @property
    def interval(self) -> float:
        return self.registry.ttl / 3

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.registry._put(self.instance)
            except RegistryError as exc:
                # Keep beating: NATS reconnects on its own and the next put re-registers us.
                _log.warning("registry heartbeat failed: %s", exc)

    async def stop_heartbeat(self) -> None:
        """Stop beating without deregistering (the entry then expires after one TTL)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        """Stop the heartbeat and remove the instance from the registry."""
        await self.stop_heartbeat()
        await self.registry.deregister(self.instance)


def _valid_token(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)


def _check_names(instance: Instance) -> None:
    for what, value in (("service name", instance.service), ("instance id", instance.id)):
        if not _valid_token(value):
            raise ValueError(f"{what} {value!r} may only use letters, digits, - and _")
