"""What the control room knows about the traffic: the latest traces, the calls between nodes, and
rate, errors and latency per node.

It is fed two ways, both from what the demo's processes already do: every line they write to
stdout (the supervisor hands each one over; the access-log lines become hops and samples) and
the spans they export over OTLP (:mod:`edgeway.demo.control.otlp`). A kit service's access-log
line and its server span have the same span id, so a hop seen both ways is kept once (the span:
it knows its parent).

Who called a hop is read from the trace: its parent span when that arrived (an edge's upstream
attempt, a kit client's call, a producer), else the edge whose request contains it in time (an
edge that exports no spans still logs its request with the trace id), else the client the
node serves (a request that started the trace). Calls are counted per pair of nodes; a pair is
a line in the topology.

Everything is bounded: the newest ``max_traces`` traces, ``max_hops`` hops each, a window of
samples per node, a capped request-id index. Background requests (health probes, scrapes, key
and revocation fetches) count in a node's rate but make no trace.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from edgeway.demo.control.spans import Hop, hop_from_log, node_of_service

__all__ = ["CLIENTS", "EDGES", "Collector", "Trace"]

EDGES = ("gateway", "web-bff", "mobile-bff")
BROKER = "broker"
# The client a node serves when a request starts there.
CLIENTS = {"web-bff": "browser", "web": "browser", "mobile-bff": "mobile app", "gateway": "partner"}
DIRECT_CLIENT = "browser"
_BACKGROUND = re.compile(r"/health|/readyz|/healthz|/metrics|/revocations|/\.well-known/")
_RATE_WINDOW_S = 10.0
_STATS_WINDOW_S = 60.0
_LINK_MEMORY_S = 600.0
_SLACK_NS = 5_000_000  # log hops are placed to the millisecond


@dataclass
class Trace:
    trace_id: str
    hops: dict[str, Hop] = field(default_factory=dict)
    dropped: int = 0  # hops over the bound
    edges: frozenset[str] = frozenset(EDGES)

    @property
    def start_ns(self) -> int:
        return min(h.start_ns for h in self.hops.values())

    @property
    def end_ns(self) -> int:
        return max(h.end_ns for h in self.hops.values())

    def root(self) -> Hop:
        """The first hop: where the trace entered the system."""
        return min(self.hops.values(), key=lambda h: (h.start_ns, h.parent_id is not None))

    def parent(self, hop: Hop) -> Hop | None:
        """The hop's parent: its parent span when that arrived, else the tightest request of an
        edge that contains it in time (how an edge that logs but exports no spans is placed)."""
        if hop.parent_id is not None:
            found = self.hops.get(hop.parent_id)
            if found is not None:
                return found
        best: Hop | None = None
        for other in self.hops.values():
            # Only an edge's request: a process that exports spans names its calls' parents.
            if other is hop or other.node == hop.node or other.kind != "server":
                continue
            if other.node not in self.edges:
                continue
            if other.start_ns - _SLACK_NS <= hop.start_ns and hop.end_ns <= other.end_ns + _SLACK_NS:
                if other.start_ns > hop.start_ns:
                    continue  # only the millisecond slack let it in: it is not the caller
                if best is None or other.duration_ms < best.duration_ms:
                    best = other
        return best


@dataclass(frozen=True, slots=True)
class Call:
    """One call from a node to another, read from a trace."""

    source: str
    target: str
    end_s: float
    error: bool


class Collector:
    def __init__(
        self,
        *,
        port_nodes: Mapping[int, str] | None = None,
        edges: Iterable[str] = EDGES,
        clients: Mapping[str, str] = CLIENTS,
        direct_client: str = DIRECT_CLIENT,
        max_traces: int = 300,
        max_hops: int = 500,
        max_samples: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.port_nodes = dict(port_nodes or {})  # upstream port -> node, for calls to the legacy
        self.edges = frozenset(edges)  # the nodes that are gateways (placed by their log lines)
        self.clients = dict(clients)  # the client a node serves when a request starts there
        self.direct_client = direct_client
        self.max_traces = max_traces
        self.max_hops = max_hops
        self.clock = clock
        self.traces: OrderedDict[str, Trace] = OrderedDict()
        self.samples: dict[str, deque[tuple[float, float, int]]] = {}
        self._max_samples = max_samples
        self._requests: OrderedDict[str, str] = OrderedDict()  # request id -> trace id
        self._max_requests = max_traces * 20
        self.spans_received = 0
        self.lines_read = 0

    # -- input -----------------------------------------------------------------------------------

    def add_line(self, process: str, line: str) -> None:
        """One line a process wrote; request lines of the JSON access log become hops."""
        self.lines_read += 1
        if not line.startswith("{") or '"status"' not in line:
            return  # not a request line: cheap to tell, most lines are not
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(entry, dict):
            return
        hop = hop_from_log(process, entry)
        if hop is None:
            return
        self._sample(hop)
        request_id = entry.get("request_id")
        if isinstance(request_id, str) and not _BACKGROUND.search(hop.name):
            self._requests[request_id] = hop.trace_id
            self._requests.move_to_end(request_id)
            while len(self._requests) > self._max_requests:
                self._requests.popitem(last=False)
        self._store(hop)

    def add_hops(self, hops: Iterable[Hop]) -> None:
        """Spans received over OTLP."""
        for hop in hops:
            self.spans_received += 1
            self._store(hop)

    def _sample(self, hop: Hop) -> None:
        samples = self.samples.get(hop.node)
        if samples is None:
            samples = self.samples[hop.node] = deque(maxlen=self._max_samples)
        samples.append((hop.end_ns / 1e9, hop.duration_ms, hop.status or 0))

    def _store(self, hop: Hop) -> None:
        if _BACKGROUND.search(hop.name):
            return
        trace = self.traces.get(hop.trace_id)
        if trace is None:
            trace = self.traces[hop.trace_id] = Trace(hop.trace_id, edges=self.edges)
            while len(self.traces) > self.max_traces:
                self.traces.popitem(last=False)
        else:
            self.traces.move_to_end(hop.trace_id)
        twin = _twin(trace, hop)
        if twin is not None:
            # The same request seen as a log line and as a span with another id (an edge that
            # exports spans of its own ids): keep the span.
            if hop.source == "log":
                return
            del trace.hops[twin.span_id]
        known = trace.hops.get(hop.span_id)
        if known is not None:
            if known.source == "log" and hop.source == "span":
                hop.process = known.process
                hop.status = hop.status if hop.status is not None else known.status
                trace.hops[hop.span_id] = hop  # the span knows its parent
            return
        if len(trace.hops) >= self.max_hops:
            trace.dropped += 1
            return
        trace.hops[hop.span_id] = hop

    # -- what the page shows ---------------------------------------------------------------------

    def trace_of_request(self, request_id: str) -> str | None:
        return self._requests.get(request_id)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per node: requests per second (last 10 s), and over the last minute the requests, the
        errors (5xx), the 4xx answers and the latency p50/p95 (ms)."""
        now = self.clock()
        out = {}
        for node, samples in self.samples.items():
            # Appended as the lines come, so newest last: read back to the window's start only.
            recent = list(itertools.takewhile(lambda s: s[0] >= now - _STATS_WINDOW_S, reversed(samples)))
            latencies = sorted(s[1] for s in recent)
            out[node] = {
                "rate": round(sum(1 for s in recent if s[0] >= now - _RATE_WINDOW_S) / _RATE_WINDOW_S, 2),
                "requests": len(recent),
                "errors": sum(1 for s in recent if s[2] >= 500),
                "rejected": sum(1 for s in recent if 400 <= s[2] < 500),
                "p50_ms": round(_percentile(latencies, 50), 2),
                "p95_ms": round(_percentile(latencies, 95), 2),
            }
        return out

    def calls(self, trace: Trace) -> list[Call]:
        """Every call between two nodes the trace shows."""
        parents = {h.parent_id for h in trace.hops.values() if h.parent_id}
        first = trace.root()
        out = []
        for hop in trace.hops.values():
            end_s = hop.end_ns / 1e9
            if hop.kind == "producer":
                out.append(Call(hop.node, BROKER, end_s, hop.error))
            elif hop.kind == "consumer":
                out.append(Call(BROKER, hop.node, end_s, hop.error))
            elif hop.kind == "server":
                source = ""
                parent = trace.parent(hop)
                while parent is not None and parent.node == hop.node:
                    parent = trace.parent(parent)
                if parent is None and hop.parent_id is not None and hop is not first:
                    pass  # called from inside the trace by a span not (yet) here: no guess
                elif parent is None:
                    source = self.clients.get(hop.node, self.direct_client)
                elif parent.kind == "producer":
                    source = BROKER
                else:
                    source = parent.node
                if source:
                    out.append(Call(source, hop.node, end_s, hop.error))
            if hop.span_id in parents:
                continue  # the callee reported itself: counted from its side
            if hop.kind == "client":
                peer = self._peer(hop)
                if peer is not None:
                    out.append(Call(hop.node, peer, end_s, hop.error))
            elif hop.source == "log" and isinstance(hop.attributes.get("upstream"), str):
                # An edge's proxied request to a process that writes no access log (the legacy
                # monolith): the log line names the instance.
                target = self._node_of_address(hop.attributes["upstream"])
                if target is not None and not self._callee_seen(trace, hop, target):
                    out.append(Call(hop.node, target, end_s, hop.error))
        return out

    def _peer(self, hop: Hop) -> str | None:
        """The node a CLIENT span called: the port it connected to (a gateway's service name may
        be a role, ``account-profile``, served by the monolith or the profile service), else its
        ``peer.service``."""
        attributes = hop.attributes
        for key in ("server.port", "net.peer.port"):
            port = attributes.get(key)
            if isinstance(port, int) and port in self.port_nodes:
                return self.port_nodes[port]
        for key in ("url.full", "http.url"):
            url = attributes.get(key)
            if isinstance(url, str):
                found = self._node_of_address(urlsplit(url).netloc)
                if found is not None:
                    return found
        peer = attributes.get("peer.service")
        if isinstance(peer, str) and peer:
            return node_of_service(peer)
        return None

    def _node_of_address(self, address: str) -> str | None:
        _, _, port = address.rpartition(":")
        return self.port_nodes.get(int(port)) if port.isdigit() else None

    @staticmethod
    def _callee_seen(trace: Trace, hop: Hop, target: str) -> bool:
        return any(h.node == target and trace.parent(h) is hop for h in trace.hops.values())

    def links(self) -> list[dict[str, Any]]:
        """The lines of the topology: calls per pair of nodes, with the rate over the last 10 s."""
        now = self.clock()
        table: dict[tuple[str, str], dict[str, Any]] = {}
        for trace in self.traces.values():
            if not trace.hops or trace.end_ns / 1e9 < now - _LINK_MEMORY_S:
                continue
            for call in self.calls(trace):
                row = table.setdefault(
                    (call.source, call.target),
                    {"source": call.source, "target": call.target, "calls": 0, "recent": 0, "errors": 0},
                )
                row["calls"] += 1
                row["errors"] += call.error
                row["recent"] += call.end_s >= now - _RATE_WINDOW_S
        for row in table.values():
            row["rate"] = round(row.pop("recent") / _RATE_WINDOW_S, 2)
        return sorted(table.values(), key=lambda r: (r["source"], r["target"]))

    def trace_list(self, limit: int = 30) -> list[dict[str, Any]]:
        """The newest traces first (by their last activity)."""
        out: list[dict[str, Any]] = []
        for trace in reversed(self.traces.values()):
            if len(out) >= limit:
                break
            if trace.hops:
                out.append(self._summary(trace))
        return out

    def _summary(self, trace: Trace) -> dict[str, Any]:
        root = trace.root()
        nodes: list[str] = []
        for hop in sorted(trace.hops.values(), key=lambda h: h.start_ns):
            if hop.node not in nodes:
                nodes.append(hop.node)
        return {
            "trace_id": trace.trace_id,
            "root": f"{root.node}: {root.name}",
            "nodes": nodes,
            "hops": len(trace.hops),
            "start": trace.start_ns / 1e9,
            "duration_ms": round((trace.end_ns - trace.start_ns) / 1e6, 3),
            "error": any(h.error for h in trace.hops.values()),
        }

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace as a waterfall: hops in call order (depth first), each with its depth."""
        trace = self.traces.get(trace_id)
        if trace is None or not trace.hops:
            return None
        origin = trace.start_ns
        children: dict[str | None, list[Hop]] = {}
        for hop in trace.hops.values():
            parent = trace.parent(hop)
            children.setdefault(parent.span_id if parent is not None else None, []).append(hop)
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()

        def visit(parent: str | None, depth: int) -> None:
            for hop in sorted(children.get(parent, ()), key=lambda h: h.start_ns):
                if hop.span_id in seen:
                    continue  # a cycle of bad parent ids must not loop
                seen.add(hop.span_id)
                rows.append({**hop.as_json(origin), "depth": depth})
                visit(hop.span_id, depth + 1)

        visit(None, 0)
        for hop in trace.hops.values():  # anything a cycle hid
            if hop.span_id not in seen:
                rows.append({**hop.as_json(origin), "depth": 0})
        calls = [{"source": c.source, "target": c.target, "error": c.error} for c in self.calls(trace)]
        return {**self._summary(trace), "spans": rows, "calls": calls, "dropped": trace.dropped}


def _twin(trace: Trace, hop: Hop) -> Hop | None:
    """A hop of the other source for the same request at an edge: both serving, same times.
    (A kit service logs the id of its span: those meet by id.)"""
    if hop.kind != "server" or hop.node not in trace.edges:
        return None
    for other in trace.hops.values():
        if (
            other.source != hop.source
            and other.span_id != hop.span_id
            and other.node == hop.node
            and other.kind == "server"
            and abs(other.start_ns - hop.start_ns) <= 2 * _SLACK_NS
            and abs(other.end_ns - hop.end_ns) <= 2 * _SLACK_NS
        ):
            return other
    return None


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]
