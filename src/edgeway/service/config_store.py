"""Remote configuration from a NATS KV bucket, with a last-good copy on disk.

At start-up :meth:`ConfigStore.start` reads every key of the bucket, retrying a few times with
exponential backoff. On success it writes the values to ``<cache_dir>/<bucket>.json`` (atomically)
and keeps a KV watch open, so changes arrive live and the disk copy follows them. When the store
stays unreachable it serves the disk copy instead (``source == "cache"``) and keeps trying to
reach the store in the background, switching to live values once it answers. With neither the
store nor a cached copy, start-up fails with :class:`~edgeway.service.errors.ConfigUnavailableError`
— a service should not start on guessed configuration.

Values are stored as JSON (``nats kv put cfg db.pool_size 10``); a value that is not valid JSON
is kept as a string. Keys use dots for structure (``db.pool_size``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import orjson
from nats.aio.client import Client as NatsClient
from nats.errors import Error as NatsError
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from edgeway.discovery import natsconn
from edgeway.service.errors import ConfigUnavailableError
from edgeway.tasks import cancel_and_wait

__all__ = ["ConfigStore", "Listener"]

_log = logging.getLogger("edgeway.service.config")

Listener = Callable[[str, Any], None]
"""Called with (key, new value) on every change; the value is None when the key was deleted."""

_DELETES = ("DEL", "PURGE")
_UNREACHABLE = (NatsError, OSError, TimeoutError, ConnectionError)


class ConfigStore:
    def __init__(
        self,
        bucket: str,
        *,
        nats_url: str = "nats://127.0.0.1:4222",
        nc: NatsClient | None = None,
        cache_dir: str | Path = ".edgeway-cache",
        retries: int = 3,
        backoff: float = 0.5,
        connect_timeout: float = 2.0,
        recover_interval: float = 5.0,
        create_bucket: bool = False,
        replicas: int = 1,
    ) -> None:
        self.bucket = bucket
        self.nats_url = nats_url
        self.cache_path = Path(cache_dir) / f"{bucket}.json"
        self.retries = max(1, retries)
        self.backoff = backoff
        self.connect_timeout = connect_timeout
        self.recover_interval = recover_interval
        self.create_bucket = create_bucket
        self.replicas = replicas  # of the bucket, when create_bucket makes it
        self.source: Literal["store", "cache", "stopped"] = "stopped"
        self._nc = nc
        self._owns_nc = nc is None
        self._values: dict[str, Any] = {}
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None

    # reading

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def snapshot(self) -> dict[str, Any]:
        return dict(self._values)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` on every change; returns a function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # lifecycle

    async def start(self) -> None:
        last_error: BaseException | None = None
        for attempt in range(self.retries):
            try:
                await self._go_live()
                return
            except _UNREACHABLE as exc:
                last_error = exc
                _log.warning(
                    "config store %s unreachable (attempt %d/%d): %s",
                    self.bucket,
                    attempt + 1,
                    self.retries,
                    exc or type(exc).__name__,
                )
                if attempt + 1 < self.retries:
                    await asyncio.sleep(self.backoff * 2**attempt)
        cached = self._read_cache()
        if cached is None:
            raise ConfigUnavailableError(
                f"config bucket {self.bucket!r} at {self.nats_url} is unreachable after {self.retries} "
                f"attempts ({last_error or 'no error'}) and there is no cached copy at {self.cache_path}"
            ) from last_error
        self._values = cached
        self.source = "cache"
        _log.warning("serving config %s from the cached copy %s", self.bucket, self.cache_path)
        self._task = asyncio.create_task(self._recover(), name=f"config-recover-{self.bucket}")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        if self._watcher is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await self._watcher.stop()  # type: ignore[no-untyped-call]
            self._watcher = None
        if self._owns_nc and self._nc is not None:
            with contextlib.suppress(*_UNREACHABLE):
                await self._nc.close()
            self._nc = None
        self.source = "stopped"

    # internals

    async def _connect(self) -> NatsClient:
        if self._nc is None or self._nc.is_closed:
            self._nc = await natsconn.connect(self.nats_url, timeout=self.connect_timeout)
        return self._nc

    async def _go_live(self) -> None:
        nc = await self._connect()
        js = nc.jetstream(timeout=self.connect_timeout)
        try:
            kv = await js.key_value(self.bucket)
        except BucketNotFoundError:
            if not self.create_bucket:
                raise ConfigUnavailableError(
                    f"config bucket {self.bucket!r} does not exist on {self.nats_url}; create it "
                    f"(nats kv add {self.bucket}) or pass create_bucket=True"
                ) from None
            kv = await js.create_key_value(bucket=self.bucket, history=5, replicas=self.replicas)
        watcher = await kv.watchall()
        values: dict[str, Any] = {}
        async with asyncio.timeout(self.connect_timeout * 5):
            async for entry in watcher:
                if entry is None:  # the end of the initial values
                    break
                if entry.operation not in _DELETES and entry.value is not None:
                    values[entry.key] = _decode(entry.value)
        changed = {k for k in values.keys() | self._values.keys() if values.get(k) != self._values.get(k)}
        self._values = values
        self._watcher = watcher
        self.source = "store"
        self._write_cache()
        for key in sorted(changed):
            self._notify(key, values.get(key))
        self._task = asyncio.create_task(self._follow(watcher), name=f"config-watch-{self.bucket}")

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:
                continue
            if entry.operation in _DELETES or entry.value is None:
                self._values.pop(entry.key, None)
                value = None
            else:
                value = _decode(entry.value)
                self._values[entry.key] = value
            self._write_cache()
            self._notify(entry.key, value)

    async def _recover(self) -> None:
        while True:
            await asyncio.sleep(self.recover_interval)
            try:
                await self._go_live()
            except (*_UNREACHABLE, ConfigUnavailableError) as exc:
                _log.debug("config store %s still unreachable: %s", self.bucket, exc)
                continue
            _log.info("config store %s reachable again; live values replace the cached copy", self.bucket)
            return

    def _notify(self, key: str, value: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(key, value)
            except Exception:
                _log.exception("config listener failed on key %s", key)

    def _write_cache(self) -> None:
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
            body = {"bucket": self.bucket, "saved_at": time.time(), "values": self._values}
            tmp.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
            os.replace(tmp, self.cache_path)  # atomic: a crash never leaves half a file
        except OSError as exc:
            _log.warning("cannot write the config cache %s: %s", self.cache_path, exc)

    def _read_cache(self) -> dict[str, Any] | None:
        try:
            body = orjson.loads(self.cache_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError) as exc:
            _log.warning("ignoring unreadable config cache %s: %s", self.cache_path, exc)
            return None
        values = body.get("values") if isinstance(body, dict) else None
        return dict(values) if isinstance(values, dict) else None


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
