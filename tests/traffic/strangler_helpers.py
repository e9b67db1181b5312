"""What the strangler tests share: a strangler route's config, a client that keeps requests
flowing while a rule moves, and waiting for a rule to reach a state."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from traffic_helpers import Client

from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.traffic.state import running_traffic
from edgeway.gateway.traffic.strangler import StranglerRun


def strangler_route(**rule: Any) -> dict[str, Any]:
    """A route moving from ``old`` to ``new``; quick checks, small windows (tests run in seconds)."""
    base = {
        "old": "old",
        "new": "new",
        "steps": [10, 50, 100],
        "step_duration": "60s",
        "min_requests": 5,
        "window": "1s",
        "check_interval": "50ms",
        "max_error_rate_increase": 0.05,
    }
    return {"id": "profile", "match": {"path": "/**"}, "proxy": {"strangler": {**base, **rule}}}


def run_of(gw: Gateway, route: str = "profile") -> StranglerRun:
    traffic = running_traffic(gw.env)
    assert traffic is not None
    return traffic.strangler(route)


class Load:
    """Requests sent one after another on a keep-alive connection until stopped; who answered
    each, and every non-2xx status, in order."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, str, int]] = []  # (time, backend, status)
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        client = await Client.connect(self.port)
        try:
            while True:
                response = await client.request("GET", "/x", headers={"Host": "gw"})
                self.answers.append(
                    (time.monotonic(), response.headers.get("x-backend", "?"), response.status)
                )
        finally:
            await client.close()

    def counts(self, after: int = 0) -> Counter[str]:
        """Who answered, from the ``after``-th answer on."""
        return Counter(backend for _, backend, _ in self.answers[after:])

    async def __aenter__(self) -> Load:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> float:
    """Wait until ``condition()`` holds; the seconds it took. AssertionError after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start
