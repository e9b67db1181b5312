"""Rendering the processes' output for a terminal: one line per record, a colored name in front.

Every edgeway process writes JSON lines (``edgeway.observability.logs``); reading them raw is for
machines. This turns ``{"time": ..., "level": "info", "message": "GET /products 200", ...}`` into
``catalog-1 │ 20:26:32 GET /products 200 23.5ms`` — level shown only when it is not info, the
request id shortened so one request can be followed across processes. Anything that is not a
JSON log line (nats-server's own output, a traceback) is shown as it is.
"""

from __future__ import annotations

from typing import Any

import orjson
from rich.text import Text

__all__ = ["COLORS", "render_line"]

COLORS = (
    "cyan",
    "green",
    "magenta",
    "blue",
    "yellow",
    "bright_cyan",
    "bright_green",
    "bright_magenta",
    "bright_blue",
    "bright_yellow",
    "dark_orange",
    "orchid",
    "spring_green2",
    "sky_blue1",
    "light_salmon1",
)
_LEVEL_STYLES = {"warning": "yellow", "error": "bold red", "critical": "bold white on red", "debug": "dim"}
_SKIP = frozenset(
    {
        "time",
        "level",
        "service",
        "request_id",
        "trace_id",
        "span_id",
        "message",
        "logger",
        "color_message",
        "kind",
    }
)
_ACCESS_FIELDS = ("method", "path", "route", "status", "duration_ms", "client")


def render_line(name: str, color: str, width: int, line: str, *, show_access: bool = True) -> Text | None:
    """The terminal line for one output line of process ``name``; None to hide it."""
    prefix = Text(f"{name:<{width}} │ ", style=color)
    record = _json(line)
    if record is None:
        return prefix + Text(line.rstrip())
    if record.get("kind") == "access" and not show_access:
        return None
    level = str(record.get("level") or "info")
    when = str(record.get("time") or "")[11:19]
    out = prefix + Text(f"{when} ", style="dim")
    if level != "info":
        out += Text(f"{level.upper()} ", style=_LEVEL_STYLES.get(level, ""))
    out += Text(str(record.get("message", "")), style=_LEVEL_STYLES.get(level, ""))
    if record.get("kind") == "access":
        duration = record.get("duration_ms")
        if isinstance(duration, int | float):
            out += Text(f" {duration:.1f}ms", style="dim")
    else:
        extras = [f"{k}={_short(v)}" for k, v in record.items() if k not in _SKIP and k not in _ACCESS_FIELDS]
        if extras:
            out += Text(" " + " ".join(extras), style="dim")
    request_id = record.get("request_id")
    if isinstance(request_id, str) and request_id:
        out += Text(f" req={request_id[:8]}", style="dim")
    exc = record.get("exc")
    if isinstance(exc, str):
        out += Text("\n" + exc, style="red")
    return out


def _json(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) and "message" in value else None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= 80 else text[:77] + "..."
