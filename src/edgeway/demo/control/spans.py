"""One hop of a request, however the control room learned of it: an OpenTelemetry span a process
exported, or a request line from a process's JSON access log.

Both become a :class:`Hop`: trace and span ids, who served it (``node``: the topology's name for
the process: ``catalog`` for both catalog instances, ``web-bff`` for the web BFF), what it was,
when it started and ended, and how it went. The access log is what every edgeway process already
writes; spans add the parent links, the calls a process made, the events and the saga steps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = ["Hop", "Kind", "hop_from_log", "node_of_process", "node_of_service"]

Kind = Literal["server", "client", "internal", "producer", "consumer"]

_INSTANCE = re.compile(r"-\d+$")
# Names a process gives itself in its logs and spans -> the topology's node. The edges name
# themselves after their config (``name: shop-web-bff``).
_ALIASES = {"shop-gateway": "gateway", "shop-web-bff": "web-bff", "shop-mobile-bff": "mobile-bff"}


def node_of_process(process: str) -> str:
    """``catalog-1`` -> ``catalog``: instances of one service are one node."""
    return _INSTANCE.sub("", process)


def node_of_service(service: str) -> str:
    """A span's ``service.name`` (or a log line's ``service``) -> the node."""
    name = _ALIASES.get(service, service)
    if name.startswith("shop-"):
        name = name[len("shop-") :]
    return node_of_process(name)


@dataclass(slots=True)
class Hop:
    trace_id: str
    span_id: str
    parent_id: str | None
    node: str
    name: str
    kind: Kind
    start_ns: int
    end_ns: int
    error: bool = False
    status: int | None = None  # the HTTP status, when it was a request
    source: Literal["span", "log"] = "span"
    process: str | None = None  # the process (catalog-2), when known
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e6

    def as_json(self, origin_ns: int) -> dict[str, Any]:
        return {
            "span_id": self.span_id,
            "parent_id": self.parent_id,
            "node": self.node,
            "process": self.process,
            "name": self.name,
            "kind": self.kind,
            "start_ms": round((self.start_ns - origin_ns) / 1e6, 3),
            "duration_ms": round(self.duration_ms, 3),
            "error": self.error,
            "status": self.status,
            "source": self.source,
            "attributes": self.attributes,
            "events": self.events,
        }


def _time_ns(text: str) -> int | None:
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(stamp.timestamp() * 1_000_000) * 1000


def hop_from_log(process: str, entry: Mapping[str, Any]) -> Hop | None:
    """The hop an access-log line describes, or None when the line is not a request.

    A gateway's line has ``"message": "request"`` and a ``route``; a kit service's has
    ``"kind": "access"``. The line is written when the request ends: it started ``duration_ms``
    before ``time`` (milliseconds, so a hop from the log is placed to the millisecond).
    """
    if entry.get("kind") != "access" and not (entry.get("message") == "request" and "route" in entry):
        return None
    trace_id, span_id = entry.get("trace_id"), entry.get("span_id")
    status, duration = entry.get("status"), entry.get("duration_ms")
    if not isinstance(trace_id, str) or not isinstance(span_id, str):
        return None
    if not isinstance(status, int) or not isinstance(duration, int | float):
        return None
    end = _time_ns(str(entry.get("time", "")))
    if end is None:
        return None
    attributes: dict[str, Any] = {"http.route": entry.get("route")}
    for key in ("upstream", "failed_calls", "bytes_out"):
        if entry.get(key) is not None:
            attributes[key] = entry[key]
    path = str(entry.get("path", ""))
    return Hop(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=None,
        node=node_of_process(process),
        name=f"{entry.get('method', '?')} {path[:120]}",
        kind="server",
        start_ns=end - int(duration * 1_000_000),
        end_ns=end,
        error=status >= 500,
        status=status,
        source="log",
        process=process,
        attributes=attributes,
    )
