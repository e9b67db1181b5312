"""Watch config files for changes by polling: no dependency, works on every file system
(network mounts, Kubernetes ConfigMap volumes whose files are swapped through a symlink: the
paths are the ones the user gave, resolved again at every poll).

Each poll stats the files (cheap); only when a stat changed are they read and hashed, and a
reload is asked for only when the content changed (a ``touch`` or a rewrite with the same bytes
is not a change). Editors write in steps (truncate, write, rename): after a stat change the
watcher waits for the stats to hold still for a moment before reading, so it does not reload a
half-written file.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from edgeway.tasks import cancel_and_wait

__all__ = ["ConfigWatcher"]

_log = logging.getLogger("edgeway.gateway.process.reload")

SETTLE = 0.2  # seconds the files must be unchanged before they are read

# (target, inode, device, size, mtime_ns) of the file a path leads to now; None when missing.
Stat = tuple[str, int, int, int, int] | None


def _stat(path: str) -> Stat:
    """The path as the user gave it, its symlinks resolved afresh: a Kubernetes ConfigMap volume
    is updated by swapping its ``..data`` symlink to a new directory, so the file behind
    ``gateway.yaml`` changes while the old target (deleted, unchanged) would look still."""
    try:
        st = os.stat(path)  # follows every symlink on the way
    except OSError:
        return None
    return os.path.realpath(path), st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns


def _digest(paths: Sequence[str]) -> str | None:
    """A hash of every file's content; None when one cannot be read right now."""
    h = hashlib.sha256()
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        h.update(path.encode())
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


class ConfigWatcher:
    """Calls ``on_change`` when the content of any watched file changes."""

    def __init__(
        self, paths: Sequence[str], interval: float, on_change: Callable[[], Awaitable[object]]
    ) -> None:
        self.interval = interval
        self._on_change = on_change
        self._paths = list(paths)
        self._stats = [_stat(p) for p in self._paths]
        self._digest = _digest(self._paths)
        self._task: asyncio.Task[None] | None = None

    @property
    def paths(self) -> list[str]:
        return list(self._paths)

    def watch(self, paths: Sequence[str]) -> None:
        """Watch this set from now on (a reload may add or drop included files); its current
        content is the new baseline."""
        self._paths = list(paths)
        self._stats = [_stat(p) for p in self._paths]
        self._digest = _digest(self._paths)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="config-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("config watch failed; polling again in %.1fs", self.interval)

    async def poll(self) -> bool:
        """One poll; True when a change was reported."""
        stats = [_stat(p) for p in self._paths]
        if stats == self._stats:
            return False
        while True:  # until the files hold still
            await asyncio.sleep(min(SETTLE, self.interval))
            settled = [_stat(p) for p in self._paths]
            if settled == stats:
                break
            stats = settled
        digest = _digest(self._paths)
        self._stats = stats
        if digest is None or digest == self._digest:
            # Unreadable (mid-replace, or deleted): asked again at the next stat change.
            return False
        self._digest = digest
        await self._on_change()
        return True
