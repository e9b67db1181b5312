"""The shop's feature flags in NATS KV: created with their defaults when the broker is ready, and
switched with ``edgeway demo flag NAME on|off`` (every service sees the change live).

=============================  =========================================================
flag                           effect when on
=============================  =========================================================
``payments.fail``              payments declines every charge: orders are compensated
``strangler.account-profile``  the edges send ``/account/profile`` to the profile service
                               instead of the legacy monolith
=============================  =========================================================
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import nats
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError

__all__ = ["DEFAULT_FLAGS", "ensure_config_bucket", "parse_flag_value", "set_flag"]

DEFAULT_FLAGS: dict[str, Any] = {"payments.fail": False, "strangler.account-profile": False}
FLAG_PREFIX = "flags."


async def _bucket(nats_url: str, bucket: str, *, create: bool) -> tuple[Any, Any]:
    nc = await nats.connect(nats_url, name="edgeway-demo", connect_timeout=2, max_reconnect_attempts=1)
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
