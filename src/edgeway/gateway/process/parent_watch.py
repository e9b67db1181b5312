"""A worker exits when its supervisor dies, even when the supervisor could not tell it to.

A supervisor killed with SIGKILL (the OOM killer, ``kill -9``, a crashed container runtime)
forwards nothing: its workers were re-parented to init and kept serving the port, invisible to
the service manager that believes the gateway is gone, and a restarted gateway then shared the
port with them (SO_REUSEPORT). Two guards, both ending in the same graceful drain as SIGTERM:

* Linux: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` -- the kernel signals the worker the moment its
  parent dies. Set right after start; the parent may already have died before that, so the
  parent pid is checked once more afterwards (a worker whose parent is gone exits at once).
* everywhere: a cheap ``getppid()`` poll on the event loop (once a second), for platforms
  without prctl and for the case where the death signal is lost (a worker that blocked it).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import sys

__all__ = ["PARENT_POLL", "die_with_parent", "parent_alive", "watch_parent"]

PARENT_POLL = 1.0  # seconds between getppid() checks: a syscall, nothing more
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent dies (Linux; a no-op elsewhere). False when
    the parent is already gone: the caller should exit instead of starting to serve."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc to load (a static build): the poll in watch_parent still guards
    # The parent may have died between fork and prctl: then the signal never comes.
    return parent_alive(parent_pid)


def parent_alive(parent_pid: int) -> bool:
    """True while this process is still the child of ``parent_pid`` (an orphan is re-parented to
    init or a subreaper, so its parent pid changes)."""
    return os.getppid() == parent_pid


async def watch_parent(parent_pid: int, stop: asyncio.Event, interval: float = PARENT_POLL) -> None:
    """Set ``stop`` (a graceful drain, as on SIGTERM) when the parent is gone."""
    while not stop.is_set():
        if not parent_alive(parent_pid):
            stop.set()
            return
        await asyncio.sleep(interval)
