"""The control room's web server, inside the ``edgeway demo`` process: the page, its JSON API and
the OTLP/HTTP receiver the demo's processes export their spans to.

==============================  ==============================================================
``GET /``                       the page (static files: ``static/``, no CDN, works offline)
``GET /api/state``              topology (nodes, links), rate/errors/latency per node, process
                                health, breakers per edge, feature flags
``GET /api/traces``             the latest traces; ``/api/traces/{id}``: one as a waterfall
``GET /api/requests/{id}``      the trace of a request id (the shop's panel asks; CORS: any)
``PUT /api/flags/{name}``       ``{"value": true}``: switch a flag (JSON only: not cross-site)
``GET|POST /api/patterns``      the patterns side by side: the last run, exposure, the delay
                                proxies; POST ``{"rtt_ms": 40, "loads": 5}`` runs one
``POST /v1/traces``             OTLP/HTTP (protobuf or JSON): spans in
==============================  ==============================================================

It runs on the demo's event loop (uvicorn's server, without its signal handling: Ctrl-C is the
demo's), started before the processes so their first spans find it, stopped after them so their
last ones do too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from edgeway.demo.control.collector import CLIENTS, Collector
from edgeway.demo.control.health import HealthBoard, ProcessView
from edgeway.demo.control.otlp import MAX_BODY, OtlpError, decode_export, export_response
from edgeway.demo.control.patterns import DelayedPorts, exposure, measure_patterns
from edgeway.demo.flags import FlagStore, parse_flag_value
from edgeway.tasks import cancel_and_wait

__all__ = ["ControlRoom", "ControlRoomSettings", "topology_nodes"]

STATIC = Path(__file__).with_name("static")
MAX_RTT_MS = 1000.0
MAX_LOADS = 50

_SERVICES = ("catalog", "inventory", "orders", "payments", "notifications", "profile", "legacy", "security")


@dataclass
class ControlRoomSettings:
    """What the control room needs to know of the demo it watches."""

    host: str
    port: int
    ports: dict[str, int]  # every named port of the demo
    edges: list[str]
    pattern: str
    admin_token: str
    nats_url: str
    config_bucket: str | None  # where the flags are (None: the system keeps none)
    security_url: str
    user: tuple[str, str]  # who the patterns are measured as
    partner: tuple[str, str]
    ready_urls: dict[str, str] = field(default_factory=dict)  # process -> readiness URL
    links: dict[str, str] = field(default_factory=dict)  # what a person opens -> URL
    # The reference shop: its clients, and the patterns measured on its screens. Another
    # system gets the rest of the room.
    shop: bool = True
    services: list[str] = field(default_factory=lambda: list(_SERVICES))

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.ports[name]}"


def topology_nodes(
    edges: list[str], processes: Mapping[str, str], services: list[str] | None = None, *, shop: bool = True
) -> list[dict[str, Any]]:
    """The nodes of the picture, by column: clients, edges, services, the broker. ``processes``
    maps each process to its node (both catalog instances are the catalog). The shop's clients
    are a browser, a mobile app and a partner, and its web app's files are served at the edge;
    another system has one client and its services in file order."""
    instances: dict[str, list[str]] = {}
    for process, node in processes.items():
        instances.setdefault(node, []).append(process)
    if shop:
        clients = ["browser"]
        if "mobile-bff" in edges:
            clients.append("mobile app")
        if "gateway" in edges:
            clients.append("partner")
        edge_column = ["web", *[e for e in ("web-bff", "mobile-bff", "gateway") if e in edges]]
        service_column = [s for s in (services or _SERVICES) if s != "web"]
    else:
        clients = ["client"]
        edge_column = list(edges)
        service_column = list(services or [])
    columns = [
        ("client", clients),
        ("edge", edge_column),
        ("service", service_column),
        ("broker", ["broker"]),
    ]
    return [
        {"id": node, "column": column, "row": row, "instances": sorted(instances.get(node, []))}
        for column, nodes in columns
        for row, node in enumerate(nodes)
    ]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C belongs to the demo, which stops this server itself


class ControlRoom:
    def __init__(
        self,
        settings: ControlRoomSettings,
        processes: Callable[[], list[ProcessView]],
        process_nodes: Mapping[str, str],
        *,
        clients: Mapping[str, str] = CLIENTS,
    ) -> None:
        self.settings = settings
        port_names = {port: name for name, port in settings.ports.items()}
        self.collector = Collector(
            port_nodes={p: process_nodes.get(n, n) for p, n in port_names.items()},
            edges=settings.edges,
            clients=clients,
            direct_client="browser" if settings.shop else "client",
        )
        self.health = HealthBoard(
            processes=processes,
            ready_urls=settings.ready_urls,
            edge_admin_urls={e: settings.url(f"{e}-admin") for e in settings.edges},
            admin_token=settings.admin_token,
            instance_names=port_names,
        )
        self.flags = FlagStore(settings.nats_url, settings.config_bucket) if settings.config_bucket else None
        self.delayed = DelayedPorts({name: settings.url(name) for name in settings.ports})
        self.nodes = topology_nodes(settings.edges, process_nodes, settings.services, shop=settings.shop)
        self.patterns: dict[str, Any] | None = None
        self.patterns_error: str | None = None
        self._measuring = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: _Server | None = None
        self.port = settings.port  # the bound one once started (0: any free port)
        self.app = self._app()

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    # -- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.settings.host, self.settings.port))  # OSError: the demo names the port
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app, log_config=None, log_level="warning", access_log=False, lifespan="off"
        )
        self._server = _Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[sock]), name="control-room")
        while not self._server.started:
            if serving.done():
                serving.result()  # raises what stopped it
                raise RuntimeError("the control room's server stopped at start")
            await asyncio.sleep(0.01)
        await self.delayed.start()
        self._tasks = [serving]

    def watch(self) -> None:
        """Start following the flags and the processes' health: once they run (before, every
        probe would fail and the broker would not be there)."""
        if self.flags is not None:
            self._tasks.append(asyncio.create_task(self.flags.run(), name="control-room-flags"))
        self._tasks.append(asyncio.create_task(self.health.run(), name="control-room-health"))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        serving, others = self._tasks[:1], self._tasks[1:]
        await cancel_and_wait(*others)
        if serving:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving[0], 3.0)
        if self.flags is not None:
            await self.flags.close()
        await self.delayed.close()

    def on_line(self, process: str, line: str) -> None:
        """One line of a process's output (the supervisor calls this for every line)."""
        self.collector.add_line(process, line)

    # -- the API ---------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self._index),
                Route("/api/state", self._state),
                Route("/api/traces", self._traces),
                Route("/api/traces/{trace_id}", self._trace),
                Route("/api/requests/{request_id}", self._request, methods=["GET", "OPTIONS"]),
                Route("/api/flags/{name}", self._flag, methods=["PUT"]),
                Route("/api/patterns", self._patterns, methods=["GET", "POST"]),
                Route("/v1/traces", self._otlp, methods=["POST"]),
                Mount("/static", StaticFiles(directory=STATIC)),
            ]
        )

    async def _index(self, _request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _state(self, _request: Request) -> Response:
        return _json(
            {
                "pattern": self.settings.pattern,
                "nodes": self.nodes,
                "links": self.collector.links(),
                "stats": self.collector.stats(),
                "health": self.health.snapshot(),
                "flags": self.flags.flags if self.flags is not None else {},
                "flags_error": self.flags.error
                if self.flags is not None
                else "the system keeps no flags (its broker has no config_bucket)",
                "shop": self.settings.shop,
                "received": {"spans": self.collector.spans_received, "lines": self.collector.lines_read},
                "links_out": self.settings.links,
            }
        )

    async def _traces(self, request: Request) -> Response:
        limit = _int(request.query_params.get("limit"), 30, 1, 300)
        return _json({"traces": self.collector.trace_list(limit)})

    async def _trace(self, request: Request) -> Response:
        found = self.collector.trace(request.path_params["trace_id"])
        if found is None:
            return _problem(404, "Not Found", "no such trace (yet, or any more: the newest are kept)")
        return _json(found, cors=True)

    async def _request(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return Response(status_code=204, headers=_CORS)
        trace_id = self.collector.trace_of_request(request.path_params["request_id"])
        found = self.collector.trace(trace_id) if trace_id is not None else None
        if found is None:
            return _problem(404, "Not Found", "no request with this id has been seen", cors=True)
        return _json(found, cors=True)

    async def _flag(self, request: Request) -> Response:
        if not _is_json(request):
            return _problem(415, "Unsupported Media Type", 'send {"value": ...} as application/json')
        name = request.path_params["name"]
        try:
            body = orjson.loads(await request.body())
            value = body["value"]
            if isinstance(value, str):
                value = parse_flag_value(value)
            elif not isinstance(value, bool | dict):
                raise ValueError("a flag is true/false or a JSON object rule")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return _problem(422, "Unprocessable Content", f'expected {{"value": true|false|{{...}}}}: {exc}')
        if self.flags is None:
            return _problem(404, "Not Found", "the system keeps no flags (its broker has no config_bucket)")
        try:
            await self.flags.set(name, value)
        except Exception as exc:  # the broker: say what failed, the page shows it
            return _problem(503, "Service Unavailable", f"cannot set {name}: {type(exc).__name__}: {exc}")
        return _json({"name": name, "value": value, "flags": self.flags.flags})

    async def _patterns(self, request: Request) -> Response:
        if not self.settings.shop:
            return _problem(404, "Not Found", "the patterns are measured on the reference shop's screens")
        if request.method == "POST":
            if not _is_json(request):
                return _problem(415, "Unsupported Media Type", 'send {"rtt_ms": 40} as application/json')
            try:
                body = orjson.loads(await request.body() or b"{}")
                rtt_ms = float(body.get("rtt_ms", 40))
                loads = int(body.get("loads", 5))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
                return _problem(422, "Unprocessable Content", f'expected {{"rtt_ms": 40, "loads": 5}}: {exc}')
            if not 0 <= rtt_ms <= MAX_RTT_MS or not 1 <= loads <= MAX_LOADS:
                detail = f"rtt_ms is 0..{MAX_RTT_MS:g} and loads 1..{MAX_LOADS}"
                return _problem(422, "Unprocessable Content", detail)
            if self._measuring.locked():
                return _problem(
                    409, "Conflict", "a measurement is running; its result comes with the next state"
                )
            async with self._measuring:
                try:
                    self.patterns = await measure_patterns(
                        self.delayed,
                        self.settings.edges,
                        security_url=self.settings.security_url,
                        user=self.settings.user,
                        partner=self.settings.partner,
                        rtt_ms=rtt_ms,
                        loads=loads,
                    )
                    self.patterns_error = None
                except Exception as exc:  # a service down, the login refused: shown on the page
                    self.patterns_error = f"{type(exc).__name__}: {exc}"
        return _json(
            {
                "last": self.patterns,
                "error": self.patterns_error,
                "running": self._measuring.locked(),
                "rtt_ms": self.delayed.rtt_ms,
                "exposure": exposure(self.settings.ports, self.settings.edges),
                "proxies": self.delayed.urls(),
            }
        )

    async def _otlp(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            return _problem(413, "Content Too Large", f"at most {MAX_BODY} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                return _problem(413, "Content Too Large", f"at most {MAX_BODY} bytes")
            chunks.append(chunk)
        try:
            hops = decode_export(b"".join(chunks), content_type, request.headers.get("content-encoding"))
        except OtlpError as exc:
            return _problem(exc.status, "Bad OTLP request", str(exc))
        self.collector.add_hops(hops)
        body, media = export_response(content_type)
        return Response(body, media_type=media)


_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET",
    "Access-Control-Max-Age": "600",
}


def _is_json(request: Request) -> bool:
    # A write must be JSON: a cross-site form cannot send it without a preflight, which fails.
    return request.headers.get("content-type", "").split(";")[0].strip() == "application/json"


def _json(value: Any, *, status: int = 200, cors: bool = False) -> Response:
    headers = {"Cache-Control": "no-store", **(_CORS if cors else {})}
    return Response(orjson.dumps(value), status, headers, media_type="application/json")


def _problem(status: int, title: str, detail: str, *, cors: bool = False) -> Response:
    body = orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = _CORS if cors else None
    return Response(body, status, headers, media_type="application/problem+json")


def _int(text: str | None, default: int, low: int, high: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        value = default
    return max(low, min(high, value))
