"""Steady load with a record of every request: when it was sent, how long it took, what came back.

wrk reports totals; a fault scenario needs the timeline (when did errors stop after the kill,
which instance served each request after the restart), so this load generator is a plain
asyncio client: ``connections`` keep-alive connections, each sending its next GET as soon as
the previous answer is in (or, with ``rate``, paced so all of them together send about ``rate``
requests per second: steady load that leaves the machine room for other work). A request that
fails at the socket level (refused, reset, no answer within ``request_timeout``) is recorded
with status 0 and the connection is opened again.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Load", "Sample", "percentile"]


@dataclass(frozen=True, slots=True)
class Sample:
    sent: float  # seconds since the load started
    latency: float  # seconds
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    backend: str  # the X-Backend header of the answer, "" if none

    @property
    def done(self) -> float:
        return self.sent + self.latency

    @property
    def ok(self) -> bool:
        return self.status == 200


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q) - 1))]


class _NoAnswer(Exception):
    pass


async def _read_response(r: asyncio.StreamReader) -> tuple[int, str, bool]:
    """(status, X-Backend, connection closes) of one response; its body is read and dropped."""
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise _NoAnswer(f"not an HTTP response: {lines[0][:60]!r}")
    status = int(parts[1])
    length, chunked, backend, close = 0, False, "", False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"x-backend":
            backend = value.decode()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            await r.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await r.readexactly(length)
    return status, backend, close


@dataclass
class Load:
    port: int
    connections: int = 16
    path: str = "/load"
    request_timeout: float = 10.0
    host: str = "127.0.0.1"
    rate: float | None = None  # requests per second over all connections; None: as fast as answered
    samples: list[Sample] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _start: float = 0.0

    def __post_init__(self) -> None:
        self._request = f"GET {self.path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n\r\n".encode()

    def now(self) -> float:
        """Seconds since :meth:`start` on the load's clock (the time base of the samples)."""
        return asyncio.get_running_loop().time() - self._start

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._start = loop.time()
        self._tasks = [loop.create_task(self._worker()) for _ in range(self.connections)]

    async def stop(self) -> list[Sample]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return sorted(self.samples, key=lambda s: s.sent)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        interval = self.connections / self.rate if self.rate else 0.0
        next_send = loop.time()
        while not self._stop.is_set():
            if interval:
                next_send += interval
                pause = next_send - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)
            sent = loop.time()
            try:
                async with asyncio.timeout(self.request_timeout):
                    if writer is None or reader is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                    writer.write(self._request)
                    status, backend, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, _NoAnswer):
                self.samples.append(Sample(sent - self._start, loop.time() - sent, 0, ""))
                _close(writer)
                writer = reader = None
                await asyncio.sleep(0.001)  # a refused connection must not spin
                continue
            self.samples.append(Sample(sent - self._start, loop.time() - sent, status, backend))
            if close:
                _close(writer)
                writer = reader = None
        _close(writer)


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        with contextlib.suppress(Exception):
            writer.close()
