"""Hold many idle keep-alive client connections to a server and read its memory meanwhile.

Each connection sends one request and reads the whole response, so the server has really set up
per-connection state (parser, buffers, a finished exchange) and is now waiting on idle
keep-alive sockets: the state a gateway holds for a crowd of mostly quiet clients.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools

from bench.errors import BenchError
from bench.harness import mb, raise_fd_limit, tree_rss_bytes

# Connections opened at once; more overflows a small listen backlog, and a dropped SYN costs a
# one-second retransmit that would dominate the measurement's run time.
_BATCH = 100


@dataclass(frozen=True)
class IdleResult:
    connections: int
    rss_before_mb: float
    rss_held_mb: float

    @property
    def per_connection_kb(self) -> float:
        return round((self.rss_held_mb - self.rss_before_mb) * 1024 / max(1, self.connections), 2)


class _ResponseDone:
    """httptools callbacks: whether the response is complete and may keep the connection."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.complete = False
        self.keep_alive = False

    def on_headers_complete(self) -> None:
        # Asked here: after the message completes the parser no longer answers for it.
        if self.parser is not None:
            self.keep_alive = bool(self.parser.should_keep_alive())

    def on_message_complete(self) -> None:
        self.complete = True


async def _one(host: str, port: int, path: str, timeout: float) -> asyncio.StreamWriter:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    done = _ResponseDone()
    parser = httptools.HttpResponseParser(done)
    done.parser = parser
    while not done.complete:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            writer.close()
            raise BenchError(f"{host}:{port} closed a keep-alive connection after one request")
        parser.feed_data(chunk)
    if parser.get_status_code() >= 400 or not done.keep_alive:
        writer.close()
        raise BenchError(
            f"{host}:{port} answered {parser.get_status_code()} "
            f"(keep-alive: {done.keep_alive}) to an idle-connection probe"
        )
    return writer


async def hold(
    host: str, port: int, pid: int, *, connections: int = 1000, path: str = "/", settle_s: float = 0.5
) -> IdleResult:
    """Open ``connections`` keep-alive connections, one request each, then read the RSS of ``pid``."""
    raise_fd_limit()
    before = tree_rss_bytes(pid)
    writers: list[asyncio.StreamWriter] = []
    try:
        for start in range(0, connections, _BATCH):
            n = min(_BATCH, connections - start)
            outcomes = await asyncio.gather(
                *(_one(host, port, path, 10.0) for _ in range(n)), return_exceptions=True
            )
            writers += [o for o in outcomes if isinstance(o, asyncio.StreamWriter)]
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise BenchError(f"{len(failures)} of {n} idle connections failed: {failures[0]!r}")
        # Let the server finish whatever it does after a response (log flush, buffer release).
        await asyncio.sleep(settle_s)
        held = tree_rss_bytes(pid)
    finally:
        for w in writers:
            w.close()
        await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    return IdleResult(connections=len(writers), rss_before_mb=mb(before), rss_held_mb=mb(held))


def measure(host: str, port: int, pid: int, *, connections: int = 1000, path: str = "/") -> IdleResult:
    return asyncio.run(hold(host, port, pid, connections=connections, path=path))
