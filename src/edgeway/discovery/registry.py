"""A service registry in a NATS KV bucket: instances register themselves and keep a heartbeat.

Each instance is one key, ``<service>.<instance id>``, whose value is a JSON
:class:`Instance`. The bucket is created with a max age (the TTL): every entry older than it is
removed by the server. A registered instance re-puts its entry every ``ttl / 3`` seconds, so a
live instance never ages out and one that dies without deregistering (killed, partitioned)
disappears within one TTL — no reaper process needed. A clean shutdown deletes the key at once.

Lookup reads the latest entry of every key under ``<service>.``; deleted and expired keys are
not returned. :class:`RegistrySource` watches a service's keys for the gateway: a put or delete
changes the set at once, and an instance whose heartbeat stops leaves the set one TTL after its
last heartbeat (see :meth:`RegistrySource.watch` for why the watcher keeps its own deadlines).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from edgeway.discovery.errors import DiscoveryError, RegistryError
from edgeway.discovery.source import Backoff
from edgeway.observability.logs import FailureLog
from edgeway.tasks import cancel_and_wait

__all__ = ["Instance", "Registration", "Registry", "RegistryDiscovery", "RegistrySource"]

_log = logging.getLogger("edgeway.discovery.registry")
_FAILURES = (NatsError, OSError, TimeoutError)
RETRY_INTERVAL = 0.5  # seconds between heartbeats after a failed one (see Registration)


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

    def __init__(
        self, nc: NatsClient, *, bucket: str = "edgeway_registry", ttl: float = 15.0, replicas: int = 1
    ) -> None:
        if ttl < 1:
            raise ValueError("registry ttl must be at least 1 second")
        if replicas not in (1, 3, 5):
            raise ValueError(f"registry replicas must be 1, 3 or 5, got {replicas}")
        if not _valid_token(bucket):
            raise ValueError(f"registry bucket name {bucket!r} may only use letters, digits, - and _")
        self.bucket = bucket
        self.ttl = ttl
        self.replicas = replicas  # copies of the bucket a NATS cluster keeps, when this creates it
        self._nc = nc
        self._kv: KeyValue | None = None
        self.expires = True  # whether the bucket has a max age (false only for a hand-made one)

    async def open(self, *, create: bool = True) -> None:
        """Bind the bucket, creating it with this registry's TTL when ``create`` (services do;
        a gateway only reads, adopts the bucket's TTL, and waits for a service to create it)."""
        js = self._nc.jetstream()
        try:
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                if not create:
                    raise RegistryError(
                        f"the registry bucket {self.bucket!r} does not exist yet (no service has "
                        "registered in it)"
                    ) from None
                self._kv = await js.create_key_value(
                    bucket=self.bucket, ttl=self.ttl, history=1, replicas=self.replicas
                )
            status = await self._kv.status()
        except _FAILURES as exc:
            raise RegistryError(f"cannot open the registry bucket {self.bucket!r}: {exc}") from exc
        self.expires = status.ttl is not None
        if status.ttl is not None and abs(status.ttl - self.ttl) > 0.5:
            if create:
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
    def is_open(self) -> bool:
        return self._kv is not None

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RegistryError("the registry is not open; call `await registry.open()` first")
        return self._kv

    async def register(self, instance: Instance, *, keep_trying: bool = False) -> Registration:
        """Put the instance and keep it alive until :meth:`Registration.close`.

        A failed first put raises :class:`RegistryError`; with ``keep_trying`` it is logged and
        the heartbeat puts the instance as soon as the registry answers again (a service that
        restarts while the registry's stream elects a leader still starts)."""
        _check_names(instance)
        registration = Registration(self, instance)
        try:
            await self._put(instance)
        except RegistryError as exc:
            if not keep_trying:
                raise
            registration._failures.failed("registry heartbeat failed: %s", exc)
            registration.start(retry_first=True)
            return registration
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
        self._failures = FailureLog(_log, f"registry heartbeat of {instance.key}")
        # Set by stop_heartbeat, besides cancelling the task: on Python 3.11, asyncio.wait_for
        # (inside nats-py's request) can swallow a cancellation that arrives as the reply does,
        # and a loop that goes on after it would never end (cancel_and_wait would wait forever).
        self._stopping = asyncio.Event()

    def start(self, *, retry_first: bool = False) -> None:
        self._task = asyncio.create_task(
            self._heartbeat(retry_first), name=f"registry-heartbeat-{self.instance.key}"
        )

    @property
    def interval(self) -> float:
        return self.registry.ttl / 3

    @property
    def retry_interval(self) -> float:
        """After a failed put: the registry's stream is often only electing a leader (a NATS
        node died), which ends within seconds; waiting a whole interval to try again let the
        entry age out (TTL = 3 intervals) while every other beat failed or waited."""
        return min(RETRY_INTERVAL, self.interval)

    async def _heartbeat(self, retry_first: bool = False) -> None:
        failed = retry_first
        stopping = self._stopping
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.retry_interval if failed else self.interval):
                    await stopping.wait()
            if stopping.is_set():
                return
            try:
                await self.registry._put(self.instance)
            except RegistryError as exc:
                # Keep beating: NATS reconnects on its own and the next put re-registers us.
                self._failures.failed("registry heartbeat failed: %s", exc)
                failed = True
            else:
                self._failures.succeeded()
                failed = False

    async def stop_heartbeat(self) -> None:
        """Stop beating without deregistering (the entry then expires after one TTL)."""
        self._stopping.set()
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def close(self) -> None:
        """Stop the heartbeat and remove the instance from the registry."""
        await self.stop_heartbeat()
        await self.registry.deregister(self.instance)


class RegistryDiscovery:
    """Resolves a service name from the registry (one look-up per call); for the service kit.
    With ``meta``, the address each instance registered under that key of its ``meta`` instead
    of its URL (``grpc``: where it serves gRPC); instances without one are left out."""

    name = "registry"

    def __init__(self, registry: Registry, *, meta: str | None = None) -> None:
        self._registry = registry
        self._meta = meta

    async def resolve(self, service: str) -> list[str]:
        try:
            instances = await self._registry.lookup(service)
            if self._meta is not None:
                key = self._meta
                return [i.meta[key].rstrip("/") for i in instances if i.meta.get(key)]
            return [i.url.rstrip("/") for i in instances]
        except RegistryError as exc:
            raise DiscoveryError(service, str(exc)) from exc


# A watch is restarted this often even when healthy: a fresh snapshot is the server's truth, and
# it repairs anything a long-lived consumer could have missed across reconnects.
RESYNC_INTERVAL = 60.0


class RegistrySource:
    """Watches the registry keys of one service; yields its instance URLs when they change.

    NATS before 2.11 removes aged-out KV entries silently (no delete marker reaches watchers),
    so the watcher keeps a deadline per instance: one TTL after the heartbeat that was last
    seen. An instance that stops heartbeating therefore leaves the set within one TTL of its
    last heartbeat, exactly when the server drops it, without polling. Puts and deletes change
    the set at once.

    With ``meta``, each instance's address is the one it registered under that key of its
    ``meta`` (``grpc``: where the kit serves gRPC) rather than its URL, with the kit's
    ``grpc://``/``grpcs://`` spelled as the gateway's ``http://``/``https://`` (a gRPC service's
    instances in ``services:`` are written so); an instance without that key is left out.
    """

    def __init__(
        self, registry: Registry, service: str, *, resync: float = RESYNC_INTERVAL, meta: str | None = None
    ) -> None:
        if not _valid_token(service):
            raise ValueError(f"service name {service!r} may only use letters, digits, - and _")
        self.registry = registry
        self.service = service
        self.resync = resync
        self.meta = meta
        self.description = f"nats_kv {registry.bucket}/{service}" + (f" ({meta})" if meta else "")

    def _address(self, instance: Instance) -> str | None:
        if self.meta is None:
            return instance.url.rstrip("/")
        found = instance.meta.get(self.meta)
        if not found:
            return None
        for kit, gateway in _GATEWAY_SCHEMES:
            if found.startswith(kit):
                found = gateway + found.removeprefix(kit)
                break
        return found.rstrip("/")

    def _deadline(self, created: Any, now: float) -> float:
        """Monotonic time at which an entry put at ``created`` (server clock) expires.

        The server's timestamp says how old a snapshot entry already is; clamped so that a
        clock skew between here and the server can neither keep an entry for more than one TTL
        nor drop a live one before its next heartbeat (every TTL/3) can arrive.
        """
        ttl = self.registry.ttl
        if not self.registry.expires:
            return float("inf")
        left = ttl
        if created is not None:
            left = created.timestamp() + ttl - time.time()
        return now + min(ttl, max(ttl / 2, left))

    async def watch(self) -> AsyncIterator[list[str]]:
        last: list[str] | None = None
        backoff = Backoff(self.description, 0.5, 30.0, _log)
        while True:
            try:
                async for urls in self._watch_once():
                    backoff.succeeded()
                    if urls != last:
                        last = urls
                        yield list(urls)
            except RegistryError as exc:
                await backoff.failed(exc)

    async def _watch_once(self) -> AsyncIterator[list[str]]:
        """One watcher's life: the snapshot, then changes and expiries, until the resync."""
        loop = asyncio.get_running_loop()
        try:
            if not self.registry.is_open:
                await self.registry.open(create=False)
            watcher = await self.registry.kv.watch(f"{self.service}.*")
        except _FAILURES as exc:
            raise RegistryError(f"cannot watch {self.description}: {exc}", self.service) from exc
        live: dict[str, tuple[str, float]] = {}  # key -> (url, expiry deadline)
        snapshot_done = False
        resync_at = loop.time() + self.resync
        # A watch is an ephemeral consumer on one NATS server; when that server dies the watch
        # goes silent while the instances go on heartbeating into the (replicated) bucket. Every
        # live instance puts its entry every TTL/3, so a watch that has heard nothing for longer
        # than that while it still holds instances is suspect: before one of them is dropped
        # for want of a heartbeat, the watch starts over from a snapshot of the bucket.
        heard = loop.time()
        silent_after = self.registry.ttl / 3 + 1.0
        try:
            while True:
                now = loop.time()
                if now >= resync_at:
                    return
                wake = min([resync_at, *(deadline for _, deadline in live.values())])
                # asyncio.timeout, not the watcher's updates(timeout): that one is built on
                # wait_for, which in Python 3.11 can swallow a cancellation arriving together
                # with an entry, leaving a stopped gateway's watch running forever.
                try:
                    async with asyncio.timeout(max(0.001, wake - now)):
                        entry = await anext(watcher)
                except TimeoutError:
                    entry = _EXPIRY_CHECK
                except StopAsyncIteration:
                    return
                except _FAILURES as exc:
                    raise RegistryError(f"watching {self.description} failed: {exc}", self.service) from exc
                now = loop.time()
                if entry is not _EXPIRY_CHECK:
                    heard = now
                if entry is None:
                    snapshot_done = True  # the end-of-snapshot marker
                elif entry is not _EXPIRY_CHECK:
                    if entry.operation in ("DEL", "PURGE") or not entry.value:
                        live.pop(entry.key, None)
                    else:
                        try:
                            url = self._address(Instance.decode(entry.value))
                        except (ValueError, KeyError, TypeError) as exc:
                            _log.warning("skipping malformed registry entry %s: %s", entry.key, exc)
                            continue
                        if url is None:  # registered without the address asked for: not one of ours
                            live.pop(entry.key, None)
                            continue
                        live[entry.key] = (url, self._deadline(entry.created, now))
                expired = [k for k, (_, deadline) in live.items() if deadline <= now]
                if expired and now - heard > silent_after:
                    _log.info(
                        "%s: no update for %.1f s; watching again from a snapshot",
                        self.description,
                        now - heard,
                    )
                    return
                for key in expired:
                    del live[key]
                if snapshot_done:
                    yield sorted({url for url, _ in live.values()})
        finally:
            # Bounded: an unsubscribe stuck on a slow or gone server must not hold up a
            # cancelled watch (a gateway stopping or reloading).
            with contextlib.suppress(*_FAILURES, TimeoutError):
                async with asyncio.timeout(2.0):
                    await watcher.stop()  # type: ignore[no-untyped-call]


_EXPIRY_CHECK: Any = object()
_GATEWAY_SCHEMES = (("grpcs://", "https://"), ("grpc://", "http://"))


def _valid_token(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)


def _check_names(instance: Instance) -> None:
    for what, value in (("service name", instance.service), ("instance id", instance.id)):
        if not _valid_token(value):
            raise ValueError(f"{what} {value!r} may only use letters, digits, - and _")
