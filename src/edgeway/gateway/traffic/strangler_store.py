"""Where strangler rules keep their state, so that every gateway (and every worker) sharing the
store agrees on each rule's step.

A rule's state is a small JSON object with a ``version``. Every process reads it each
``check_interval`` and applies its step to its own split; a process that decides a change (an
advance, a rollback, an operator's command) writes it with :meth:`StranglerStateStore.swap`, a
compare-and-set on the version it read: of two gateways deciding at once, one wins and the other
reads the winner's state at its next check. Backends:

- ``memory``: this process (kept across live reloads in the traffic book); one worker only;
- ``file``: one JSON file holding every rule, replaced atomically under an exclusive ``flock``
  (the gateways of one host, or any sharing a file system with working locks);
- ``redis``: one key per rule, the compare-and-set a Lua script (every gateway using the Redis).
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from edgeway.gateway.traffic.strangler_config import StranglerStore

__all__ = ["FileStore", "MemoryStore", "RedisStore", "StoreUnavailable", "StranglerStateStore", "make_store"]

T = TypeVar("T")


class StoreUnavailable(RuntimeError):
    """The strangler's store did not answer (Redis down, the file unreadable): the rule keeps its
    step and the gateway tries again at the next check."""


class StranglerStateStore(Protocol):
    async def get(self, route: str) -> dict[str, Any] | None:
        """The rule's stored state, None when there is none."""
        ...

    async def swap(self, route: str, expected: int | None, state: dict[str, Any]) -> bool:
        """Store ``state`` if the stored version is still ``expected`` (None: nothing stored);
        False when another writer got there first."""
        ...

    async def close(self) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.states: dict[str, dict[str, Any]] = {}

    async def get(self, route: str) -> dict[str, Any] | None:
        found = self.states.get(route)
        return dict(found) if found is not None else None

    async def swap(self, route: str, expected: int | None, state: dict[str, Any]) -> bool:
        current = self.states.get(route)
        if (current["version"] if current is not None else None) != expected:
            return False
        self.states[route] = dict(state)
        return True

    async def close(self) -> None:
        return None


class FileStore:
    """Every rule in one JSON file; reads and writes hold an exclusive lock on ``<path>.lock``."""

    def __init__(self, path: str | Path, timeout: float) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.timeout = timeout

    async def get(self, route: str) -> dict[str, Any] | None:
        states = await self._locked(self._read)
        return states.get(route)

    async def swap(self, route: str, expected: int | None, state: dict[str, Any]) -> bool:
        def write() -> bool:
            states = self._read()
            current = states.get(route)
            if (current["version"] if current is not None else None) != expected:
                return False
            states[route] = state
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_bytes(orjson.dumps(states, option=orjson.OPT_INDENT_2))
            temporary.replace(self.path)
            return True

        return await self._locked(write)

    async def close(self) -> None:
        return None

    def _read(self) -> dict[str, Any]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise StoreUnavailable(f"strangler store {self.path} is not JSON: {exc}") from None
        return data if isinstance(data, dict) else {}

    async def _locked(self, work: Callable[[], T]) -> T:
        def run() -> T:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    return work()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

        try:
            return await asyncio.wait_for(asyncio.to_thread(run), self.timeout)
        except (OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"strangler store {self.path}: {exc!r}") from None


# KEYS[1] the rule's key; ARGV expected version ('' for none), the new version, the state JSON.
_SWAP_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'version')
if (current or '') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'state', ARGV[3])
return 1
"""


class RedisStore:
    def __init__(self, config: StranglerStore) -> None:
        import redis.asyncio as aioredis

        self.prefix = config.key_prefix
        self.timeout = float(config.timeout)
        self.redis = aioredis.Redis.from_url(
            config.redis_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self._swap = self.redis.register_script(_SWAP_SCRIPT)

    async def get(self, route: str) -> dict[str, Any] | None:
        from redis.exceptions import RedisError

        try:
            raw = await self.redis.hget(self.prefix + route, "state")
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"strangler store (redis): {exc}") from None
        if raw is None:
            return None
        found = orjson.loads(raw)
        return found if isinstance(found, dict) else None

    async def swap(self, route: str, expected: int | None, state: dict[str, Any]) -> bool:
        from redis.exceptions import RedisError

        args: list[str | bytes] = [
            "" if expected is None else str(expected),
            str(state["version"]),
            orjson.dumps(state),
        ]
        try:
            return bool(await self._swap(keys=[self.prefix + route], args=args))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"strangler store (redis): {exc}") from None

    async def close(self) -> None:
        await self.redis.aclose()  # type: ignore[attr-defined]  # types-redis predates redis 5


def make_store(config: StranglerStore, memory: MemoryStore) -> StranglerStateStore:
    """The store ``config`` names; ``memory``: the process's own (carried across reloads)."""
    if config.backend == "file":
        assert config.path is not None  # checked at validation
        return FileStore(config.path, float(config.timeout))
    if config.backend == "redis":
        return RedisStore(config)
    return memory
