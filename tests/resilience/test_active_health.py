from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from resilience_helpers import backend, read_request

from conftest import dead_port
from edgeway.resilience.health import HealthChecker, HealthCheckPolicy, probe

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Target:
    port: int
    host: str = "127.0.0.1"

    # A field, not a property: the protocols it stands for (Member, Probed) declare a plain
    # attribute, which a read-only property does not satisfy.
    authority: bytes = field(init=False)
    tls: ssl.SSLContext | None = None  # plaintext
    server_hostname: str = field(init=False)

    def __post_init__(self) -> None:
        self.authority = f"{self.host}:{self.port}".encode()
        self.server_hostname = self.host


def answering(status: int, seen: list[bytes] | None = None) -> RawHandler:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        line, headers, _ = await read_request(r)
        if seen is not None:
            seen.append(line + b" " + headers[b"host"])
        w.write(b"HTTP/1.1 %d X\r\ncontent-length: 0\r\n\r\n" % status)
        await w.drain()
        w.close()

    return handler


async def test_a_2xx_or_3xx_answer_passes_and_anything_else_fails() -> None:
    seen: list[bytes] = []
    async with (
        backend(answering(204, seen)) as ok,
        backend(answering(302)) as moved,
        backend(answering(503)) as bad,
    ):
        assert await probe(Target(ok), "/ready", 1.0) == (True, "204")
        assert (await probe(Target(moved), "/ready", 1.0))[0]
        assert await probe(Target(bad), "/ready", 1.0) == (False, "answered 503")
    assert seen == [b"GET /ready HTTP/1.1 127.0.0.1:%d" % ok]


async def test_refused_and_silent_instances_fail_with_the_reason() -> None:
    passed, reason = await probe(Target(dead_port()), "/ready", 1.0)
    assert not passed
    assert reason.startswith("cannot connect")

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with backend(silent) as port:
        assert await probe(Target(port), "/ready", 0.1) == (False, "no answer within 0.1s")


async def test_the_checker_runs_a_round_at_start_then_every_interval_until_stopped() -> None:
    results: list[tuple[int, bool]] = []
    async with backend(answering(200)) as port:
        targets = [Target(port), Target(dead_port())]
        # No probe here waits out its timeout (one instance answers, the other refuses), so it
        # can be generous: at 50 ms a probe of the answering instance failed on a loaded machine
        # and the round at start reported it down. The timeout may not exceed the interval.
        checker = HealthChecker(
            HealthCheckPolicy(interval=1.0, timeout=1.0),
            lambda: targets,
            lambda t, passed, _reason: results.append((t.port, passed)),
        )
        await checker.start()
        assert sorted(results) == sorted([(port, True), (targets[1].port, False)])
        # Rounds go on by themselves: wait for two more, however slowly a loaded machine runs
        # them, rather than count what a fixed sleep held.
        async with asyncio.timeout(30):
            while checker.rounds < 3:
                await asyncio.sleep(0.02)
        await checker.stop()
        rounds = checker.rounds
        await asyncio.sleep(1.5)  # past the next round's time: a checker still running starts it
    assert checker.rounds == rounds
