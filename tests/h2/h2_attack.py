"""What the HTTP/2 attack tests share: an attacker writing hand-built frames on a raw socket, the
frames the gateway sends back (to find its GOAWAY), a normal client measuring that the gateway
still answers during the attack, and the process's memory sampled while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from h2_client import H2Client
from hpack import Encoder
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENHANCE_YOUR_CALM = 0xB
PROTOCOL_ERROR = 0x1
REFUSED_STREAM = 0x7
CANCEL = 0x8


def request_block(path: str = "/", encoder: Encoder | None = None, **extra: str) -> bytes:
    """An HPACK-encoded GET header block."""
    fields = [(":method", "GET"), (":scheme", "http"), (":path", path), (":authority", "localhost")]
    fields += list(extra.items())
    return (encoder or Encoder()).encode(fields)


def headers_frame(stream_id: int, block: bytes, *flags: str) -> bytes:
    return HeadersFrame(stream_id, data=block, flags=flags).serialize()


class Attacker:
    """A raw connection: the preface and an empty SETTINGS, then whatever the test writes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received = bytearray()
        # Read all along, as a client does: a reset connection's StreamReader raises before it
        # returns what it had buffered (the GOAWAY).
        self._reading = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await self.reader.read(65536):
                self.received += chunk

    @classmethod
    async def connect(cls, port: int) -> Attacker:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(PREFACE + SettingsFrame(0).serialize())
        return cls(r, w)

    async def send(self, data: bytes) -> bool:
        """Write; False once the gateway has closed the connection."""
        if self.writer.is_closing():
            return False
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def send_answered(self, data: bytes, answer: int, timeout: float = 10.0) -> bool:
        """Write, then wait until the gateway has sent ``answer`` more bytes or closed the
        connection; False once it is closed (TimeoutError if it does neither)."""
        expected = len(self.received) + answer
        if not await self.send(data):
            return False
        async with asyncio.timeout(timeout):
            while len(self.received) < expected and not self._reading.done():
                await asyncio.sleep(0.001)
        return not self._reading.done()

    async def read_until_closed(self, timeout: float) -> list[Frame]:
        """Every frame the gateway sent until it closed the connection (TimeoutError if not)."""
        await asyncio.wait_for(asyncio.shield(self._reading), timeout)
        return parse_frames(bytes(self.received))

    async def goaway(self, timeout: float = 10.0) -> GoAwayFrame:
        frames = await self.read_until_closed(timeout)
        found = [f for f in frames if isinstance(f, GoAwayFrame)]
        assert found, f"no GOAWAY among {[type(f).__name__ for f in frames]}"
        return found[-1]

    def close(self) -> None:
        self.writer.close()
        self._reading.cancel()


def parse_frames(data: bytes) -> list[Frame]:
    frames: list[Frame] = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        if len(view) < 9 + length:
            break
        frame.parse_body(view[9 : 9 + length])
        frames.append(frame)
        view = view[9 + length :]
    return frames


def rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Watch:
    """A normal client's requests during an attack, and the memory peak.

    Each request is timed twice: wall time (``latencies``), and the CPU time this process spent
    while it was outstanding (``cpu``). The gateway runs in this process, so a loop held by
    attack work (decoding a bomb, answering a flood) burns CPU for as long as it holds the
    request; a loaded machine that merely does not schedule us stretches the wall time and
    leaves the CPU time alone. ``cpu`` is what tests bound; ``latencies`` is shown with it.
    """

    latencies: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    baseline: int = 0
    peak: int = 0

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    @property
    def worst(self) -> float:
        return max(self.latencies) if self.latencies else float("inf")

    @property
    def worst_cpu(self) -> float:
        return max(self.cpu) if self.cpu else float("inf")

    def held(self, cpu_limit: float) -> str | None:
        """Why the normal client was held behind the attack, or None: a failure, too few
        answers, or a request during which this process spent ``cpu_limit`` s of CPU or more."""
        if self.failures:
            return f"the normal client failed: {self.failures}"
        if len(self.latencies) < 3:
            return f"the normal client got {len(self.latencies)} answers during the attack"
        if self.worst_cpu >= cpu_limit:
            return (
                f"a normal request waited while the process spent {self.worst_cpu:.2f}s of CPU"
                f" (wall {self.worst:.2f}s): the attack held the loop"
            )
        return None


@contextlib.asynccontextmanager
async def watching(port: int, path: str = "/ok", at_least: int = 3) -> AsyncIterator[Watch]:
    """While the block runs: a normal client on its own connection sends a request every 50 ms
    and records how long each took (``at_least`` of them, however soon the attack was
    stopped); memory is sampled every 10 ms."""
    watch = Watch(baseline=rss())
    watch.peak = watch.baseline
    client = await H2Client.connect(port)
    stop = asyncio.Event()

    async def requests() -> None:
        while not stop.is_set():
            started, cpu_started = time.perf_counter(), time.process_time()
            try:
                reply = await client.request("GET", path, timeout=5)
                if reply.status != 200:
                    watch.failures.append(f"status {reply.status}")
            except Exception as exc:
                watch.failures.append(repr(exc))
                return
            watch.latencies.append(time.perf_counter() - started)
            watch.cpu.append(time.process_time() - cpu_started)
            await asyncio.sleep(0.05)

    async def memory() -> None:
        while not stop.is_set():
            watch.peak = max(watch.peak, rss())
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(requests()), asyncio.create_task(memory())]
    try:
        yield watch
        async with asyncio.timeout(10):
            while len(watch.latencies) < at_least and not watch.failures:
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        await client.close()
