"""Requests in flight on an instance its health check marks down fail over at once.

The instance freezes: it accepts connections and reads requests but never answers (a stopped
process, a deadlock). Its health check fails after a few hundred milliseconds; a request already
sent there must not wait for its own 20 s timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable

from resilience_helpers import backend, config, get, read_request, running

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

HEALTH = {"interval": "100ms", "timeout": "100ms", "healthy_threshold": 1, "unhealthy_threshold": 2}
SLOW = {"connect": "1s", "first_byte": "20s", "total": "20s"}
RETRY = {"attempts": 2, "backoff": "1ms", "max_backoff": "2ms"}


def freezable(name: str, frozen: dict[str, bool], served: list[str]) -> Handler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                line, _, _ = await read_request(r)
                if frozen[name]:
                    await asyncio.sleep(60)  # accepted and read, never answered
                if b"/health" not in line:
                    served.append(name)
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(name), name.encode()))
                await w.drain()
        w.close()

    return handler


async def _two_at_once(gp: int, method: str) -> tuple[list[int], list[bytes], float]:
    started = time.monotonic()
    body = b"x" if method == "POST" else b""
    replies = await asyncio.gather(get(gp, "/x", method, body=body), get(gp, "/x", method, body=body))
    return [r.status for r in replies], [r.body for r in replies], time.monotonic() - started


async def test_an_idempotent_request_on_an_instance_marked_down_is_retried_elsewhere_at_once() -> None:
    frozen = {"a": False, "b": False}
    served: list[str] = []
    async with (
        backend(freezable("a", frozen, served)) as a,
        backend(freezable("b", frozen, served)) as b,
        running(config([a, b], health_check=HEALTH, retry=RETRY, timeouts=SLOW)) as (gp, _),
    ):
        frozen["a"] = True
        # Round robin: one of the two goes to the frozen instance.
        statuses, bodies, elapsed = await _two_at_once(gp, "GET")
    assert statuses == [200, 200]
    assert bodies == [b"b", b"b"]
    assert elapsed < 5  # marked down after ~0.3 s; before: the 20 s first-byte timeout


async def test_a_non_idempotent_request_on_an_instance_marked_down_fails_at_once_with_a_problem() -> None:
    frozen = {"a": False, "b": False}
    served: list[str] = []
    async with (
        backend(freezable("a", frozen, served)) as a,
        backend(freezable("b", frozen, served)) as b,
        running(config([a, b], health_check=HEALTH, retry=RETRY, timeouts=SLOW)) as (gp, _),
    ):
        frozen["a"] = True
        statuses, bodies, elapsed = await _two_at_once(gp, "POST")
        # The instance is out of the balancer now: what follows goes to the other one.
        after = await get(gp, "/x", "POST", body=b"x")
    assert sorted(statuses) == [200, 504]
    problem = json.loads(bodies[statuses.index(504)])
    assert "health check" in problem["detail"]
    assert elapsed < 5
    assert (after.status, after.body) == (200, b"b")


async def test_without_retries_the_request_fails_at_once_and_the_pool_is_not_left_waiting() -> None:
    """No retry policy: the request sent to the frozen instance is 504 at once; requests queued
    for one of its pooled connections (a pool of 1) fail too instead of being sent there."""
    frozen = {"a": False}
    served: list[str] = []
    # No panic: with a single instance down the service would be in panic (0 % healthy) and
    # the requests would stay on it, health verdict ignored (test_panic_threshold.py).
    cfg = config([0], health_check=HEALTH, timeouts=SLOW, pool={"max_connections": 1}, panic_threshold=0)
    async with backend(freezable("a", frozen, served)) as a:
        cfg["services"]["svc"]["instances"] = [f"http://127.0.0.1:{a}"]
        async with running(cfg) as (gp, _):
            frozen["a"] = True
            started = time.monotonic()
            replies = await asyncio.gather(*(get(gp) for _ in range(3)))
            elapsed = time.monotonic() - started
    assert [r.status for r in replies].count(504) >= 1
    assert all(r.status in (503, 504) for r in replies)
    assert elapsed < 5
