"""The two shapes of a discovery source, and what they share.

- :class:`Discovery` answers once, by service name: ``await resolve("orders")`` gives base URLs.
  The service kit's clients ask it before a call (behind a short cache).
- :class:`InstanceSource` is bound to one service and keeps its instance set current:
  ``async for urls in source.watch()`` yields the whole set every time it changes (first the
  initial set). The gateway runs one per discovered service and updates the cluster from it.

Instances are base URLs in one canonical form, ``http://host:port`` (IPv6 hosts in brackets),
the same form the gateway config's ``instances`` take, so a set can be compared and merged with
the static list by plain string equality.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

__all__ = ["Backoff", "Discovery", "InstanceSource", "instance_url", "reraise_cancellation", "retry_delay"]


class Discovery(Protocol):
    name: str

    async def resolve(self, service: str) -> list[str]: ...


class InstanceSource(Protocol):
    description: str  # what is watched, for logs: "dns SRV _http._tcp.orders.svc"

    def watch(self) -> AsyncIterator[list[str]]: ...


def instance_url(host: str, port: int, scheme: str = "http") -> str:
    """``http://host:port``; an IPv6 address is bracketed, a trailing dot of a DNS name dropped."""
    host = host.rstrip(".")
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def retry_delay(failures: int, base: float, cap: float) -> float:
    """Exponential back-off after ``failures`` consecutive failures (1, 2, ...), capped: a source
    that cannot reach its backend retries soon, then ever less often, never hammering it."""
    return min(cap, base * 2.0 ** min(failures - 1, 16))


def reraise_cancellation() -> None:
    """Raise CancelledError if the running task is being cancelled.

    nats-py turns a cancellation that arrives during a request into its own TimeoutError; a
    loop that retries on errors would swallow it and never stop. Call this in such handlers.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Backoff:
    """The failure handling every watch shares: count consecutive failures, log each with the
    delay before the next try, and wait it out. The last good set is kept by the caller simply
    by not yielding."""

    def __init__(self, description: str, base: float, cap: float, log: logging.Logger) -> None:
        self.description = description
        self.base = base
        self.cap = cap
        self.failures = 0
        self._log = log

    async def failed(self, exc: Exception) -> None:
        reraise_cancellation()
        self.failures += 1
        delay = retry_delay(self.failures, self.base, self.cap)
        self._log.warning(
            "%s failed (%s); keeping the last answer, trying again in %.1fs",
            self.description,
            exc,
            delay,
            extra={"source": self.description, "failures": self.failures},
        )
        await asyncio.sleep(delay)

    def succeeded(self) -> None:
        self.failures = 0
