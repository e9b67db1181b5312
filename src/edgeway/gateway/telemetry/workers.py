"""The metrics of a multi-worker gateway: whichever worker a scrape reaches answers the sum of
every worker's.

The workers share the admin port (SO_REUSEPORT), so a scrape lands on one of them at random. Each
worker also serves its own exposition on a Unix socket in a directory the supervisor makes for
the gateway's lifetime (``EDGEWAY_METRICS_DIR``); the worker that takes the scrape reads its
peers' sockets and merges: counters, histograms and summaries are added up, and so are gauges,
except the state gauges in :data:`GAUGE_MERGE` (a breaker is as open as its most open worker's,
an instance as available as its least available one's).

Why not prometheus_client's multiprocess mode: its values live in memory-mapped files written
under a lock on every increment (a cost on each request where the gateway counts into plain
integers), it cannot export the gauges the gateway reads at scrape time (breaker states,
instance availability, cache sizes, open connections), and its files must be cleaned between
runs. Reading peers at scrape time costs nothing per request, and a worker that died simply
drops out of the sum (``edgeway_gateway_workers`` says how many answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = ["DIR_ENV", "GAUGE_MERGE", "WorkerMetrics", "merge_expositions"]

# Set by the supervisor (edgeway.gateway.process.supervisor, which spells it out: it imports
# nothing of edgeway).
DIR_ENV = "EDGEWAY_METRICS_DIR"

# How a gauge of several workers is one number; a gauge not named here is added up.
GAUGE_MERGE: dict[str, Callable[[Iterable[float]], float]] = {
    "edgeway_breaker_state": max,
    "edgeway_instance_available": min,
    "edgeway_instance_healthy": min,
    "edgeway_instance_ejected": max,
    "edgeway_gateway_revocations_known": max,
    "edgeway_gateway_revocations_push_up": min,
    # Split weights and strangler states: the workers apply the same ones (a strangler's through
    # its shared store); adding them up would say 200 %.
    "edgeway_traffic_weight_percent": max,
    "edgeway_strangler_percent": max,
    "edgeway_strangler_step": max,
    "edgeway_strangler_status": max,
    "edgeway_strangler_rollbacks": max,
}
_PEER_TIMEOUT = 2.0


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merge_expositions(texts: Iterable[str]) -> bytes:
    """One exposition holding the sum of ``texts`` (see the module docstring), with
    ``edgeway_gateway_workers``: how many were merged."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], list[float]]] = {}
    workers = 0
    for text in texts:
        workers += 1
        for family in text_string_to_metric_families(text):
            # (Two versions mid-upgrade may disagree on a family's type: the first one's holds.)
            families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
            found = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                found.setdefault(key, []).append(sample.value)
    merged: list[Metric] = []
    for name, family in families.items():
        combine = GAUGE_MERGE.get(name, sum) if family.type == "gauge" else sum
        for (sample_name, labels), observed in values[name].items():
            # A counter's creation time is the earliest worker's.
            value = min(observed) if sample_name.endswith("_created") else combine(observed)
            family.samples.append(Sample(sample_name, dict(labels), value))
        merged.append(family)
    count = Metric("edgeway_gateway_workers", "Gateway workers whose metrics this scrape adds up.", "gauge")
    count.samples.append(Sample("edgeway_gateway_workers", {}, float(workers)))
    merged.append(count)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merged))
    return generate_latest(registry)


class WorkerMetrics:
    """This worker's side: its exposition on ``<directory>/<pid>.sock``, and the sum of every
    worker's for the scrape it takes."""

    def __init__(self, directory: Path, exposition: Callable[[], bytes]) -> None:
        self.directory = directory
        self.exposition = exposition
        self.path = directory / f"{os.getpid()}.sock"
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a previous process with this pid
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self.exposition())
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def gather(self) -> bytes:
        """Every worker's metrics, added up."""
        own = self.exposition().decode()
        peers = sorted(p for p in self.directory.glob("*.sock") if p != self.path)
        found = await asyncio.gather(*(self._read(peer) for peer in peers))
        return merge_expositions([own, *(text for text in found if text is not None)])

    @staticmethod
    async def _read(path: Path) -> str | None:
        try:
            async with asyncio.timeout(_PEER_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(str(path))
                try:
                    return (await reader.read()).decode()
                finally:
                    writer.close()
        except (OSError, TimeoutError):
            # A worker that exited (its socket left behind) or hangs: the sum goes on without it.
            return None
