"""The shop's feature flags in NATS KV: created with their defaults when the broker is ready, and
switched with ``edgeway demo flag NAME on|off`` (every service sees the change live).

=============================  =========================================================
flag                           effect when on
=============================  =========================================================
``payments.fail``              payments declines every charge: orders are compensated
``strangler.account-profile``  the edges move ``/account/profile`` from the legacy monolith to
                               the profile service in steps (off: back to the monolith)
=============================  =========================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import nats
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError

from edgeway.bus.urls import nats_servers

__all__ = ["DEFAULT_FLAGS", "FlagStore", "ensure_config_bucket", "parse_flag_value", "set_flag"]

DEFAULT_FLAGS: dict[str, Any] = {"payments.fail": False, "strangler.account-profile": False}
FLAG_PREFIX = "flags."


async def _bucket(nats_url: str, bucket: str, *, create: bool, **options: Any) -> tuple[Any, Any]:
    # The system file's NATS may be a cluster, comma-separated: nats-py takes a list, not that
    # string, so the setting goes through the one broker URL parser like every other entry point.
    nc = await nats.connect(
        nats_servers(nats_url), name="edgeway-demo", connect_timeout=2, max_reconnect_attempts=1, **options
    )
    js = nc.jetstream()
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        if not create:
            await nc.close()
            raise
        kv = await js.create_key_value(bucket=bucket, history=5)
    return nc, kv


async def ensure_config_bucket(nats_url: str, bucket: str) -> None:
    """Create the config bucket and put each default flag that is not set yet."""
    nc, kv = await _bucket(nats_url, bucket, create=True)
    try:
        for name, value in DEFAULT_FLAGS.items():
            # Set before (a previous run, or by hand): keep it.
            with contextlib.suppress(KeyWrongLastSequenceError):
                await kv.create(FLAG_PREFIX + name, json.dumps(value).encode())
    finally:
        await nc.close()


async def set_flag(nats_url: str, bucket: str, name: str, value: Any) -> None:
    nc, kv = await _bucket(nats_url, bucket, create=False)
    try:
        await kv.put(FLAG_PREFIX + name, json.dumps(value).encode())
    finally:
        await nc.close()


class FlagStore:
    """The flags, live, for a long-running reader (the control room): one connection and a watch
    on the bucket, so :attr:`flags` follows every change, whoever makes it (this store, ``edgeway
    demo flag``, a service); reopened when the broker goes away."""

    def __init__(self, nats_url: str, bucket: str) -> None:
        self.nats_url = nats_url
        self.bucket = bucket
        self.flags: dict[str, Any] = {}
        self.error: str | None = None  # why the flags are not being followed right now
        # The stream revision each flag's value came from: a watch delivering an older value
        # after this store wrote a newer one must not put the older one back.
        self._revisions: dict[str, int] = {}
        self._nc: Any = None
        self._kv: Any = None

    async def _open(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            # Its errors are reported through self.error (the page shows it), not printed by nats-py.
            self._nc, self._kv = await _bucket(self.nats_url, self.bucket, create=False, error_cb=_quiet)
        return self._kv

    async def run(self, retry_after: float = 1.0) -> None:
        """Follow the bucket until cancelled."""
        while True:
            try:
                kv = await self._open()
                watcher = await kv.watchall()
                self.error = None
                async for entry in watcher:
                    if entry is None or not entry.key.startswith(FLAG_PREFIX):
                        continue  # None: the values there were have all been delivered
                    name = entry.key[len(FLAG_PREFIX) :]
                    if (entry.revision or 0) < self._revisions.get(name, 0):
                        continue
                    self._revisions[name] = entry.revision or 0
                    if entry.operation in ("DEL", "PURGE") or entry.value is None:
                        self.flags.pop(name, None)
                        continue
                    with contextlib.suppress(ValueError, TypeError):
                        self.flags[name] = json.loads(entry.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker went away or the bucket is not there yet
                self.error = f"{type(exc).__name__}: {exc}"
                await self.close()
            await asyncio.sleep(retry_after)

    async def set(self, name: str, value: Any) -> None:
        kv = await self._open()
        revision = await kv.put(FLAG_PREFIX + name, json.dumps(value).encode())
        if revision >= self._revisions.get(name, 0):
            self._revisions[name] = revision
            self.flags[name] = value  # the watch says so too, moments later

    async def close(self) -> None:
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._nc = self._kv = None


async def _quiet(_exc: Exception) -> None:
    pass


def parse_flag_value(text: str) -> Any:
    """``on``/``off``/``true``/``false`` or a JSON rule like ``{"percentage": 25}``."""
    lowered = text.strip().lower()
    if lowered in ("on", "true", "yes", "1"):
        return True
    if lowered in ("off", "false", "no", "0"):
        return False
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{text!r} is not on/off or a JSON flag rule: {exc}") from exc
    if not isinstance(value, dict | bool):
        raise ValueError(f"{text!r}: a flag is on/off or a JSON object rule")
    return value
