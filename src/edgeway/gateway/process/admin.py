"""The admin port: /healthz (the process runs), /readyz (it can serve), /routes (what it serves),
/metrics (Prometheus exposition of the gateway's metrics), ``POST /reload`` (reload the config
file; see :mod:`edgeway.gateway.process.reload`), ``POST /cache/purge`` (remove stored responses; see
:mod:`edgeway.gateway.filters.cache.admin`), and the traffic endpoints — splits, strangler rules,
breakers, instances, and the strangler and drain controls (:mod:`.admin_traffic`).

Served by the same engine as the traffic port, on its own listener, so a saturated traffic port
does not hide the gateway's health from the orchestrator. Every endpoint but the probes needs the
admin token, writes must be JSON and not cross-origin, and the Host must be an address or a
configured name: see :mod:`edgeway.gateway.process.admin_auth`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from edgeway.gateway.core.runtime import Gateway
from edgeway.gateway.process.admin_auth import AdminGuard, AdminRefusal
from edgeway.gateway.process.admin_traffic import serve_traffic_admin
from edgeway.gateway.telemetry.workers import WorkerMetrics
from edgeway.http.exchange import Exchange

if TYPE_CHECKING:
    from edgeway.gateway.process.reload import Reloader

_RELOAD_STATUS = {"applied": 200, "unchanged": 200, "refused": 422, "failed": 500}


class AdminHandler:
    def __init__(self, gateway: Gateway, guard: AdminGuard, reloader: Reloader | None = None) -> None:
        self.gateway = gateway
        self.guard = guard
        self.reloader = reloader
        self.draining = False
        # A worker of a multi-worker gateway: /metrics answers every worker's, added up.
        self.workers: WorkerMetrics | None = None

    async def __call__(self, ex: Exchange) -> None:
        try:
            authorised = self.guard.check(ex)
        except AdminRefusal as refusal:
            ex.close_after = True  # whatever body it sent is not read
            ex.respond_problem(refusal.status, refusal.title, refusal.detail, headers=refusal.headers)
            return
        path = ex.path
        if path == b"/reload":
            await self._reload(ex)
            return
        if path == b"/cache/purge":
            # Imported here: only gateways whose operators purge load the cache modules.
            from edgeway.gateway.filters.cache.admin import purge_cache

            await purge_cache(self.gateway, ex)
            return
        if await serve_traffic_admin(self.gateway, ex):
            return
        if ex.method not in (b"GET", b"HEAD"):
            ex.respond_problem(405, "Method Not Allowed", headers=[(b"allow", b"GET, HEAD")])
            return
        if path == b"/healthz":
            generation = self.reloader.generation if self.reloader is not None else 1
            health = {"status": "ok", "service": self.gateway.name, "pid": os.getpid()}
            ex.respond_json(200, {**health, "config_generation": generation})
        elif path == b"/readyz":
            ready, detail = self.gateway.ready()
            if self.draining:
                ready, detail = False, {**detail, "draining": True}
            if not authorised:
                # A probe without the token learns whether to send traffic, not what is behind.
                detail = {"draining": True} if self.draining else {}
            ex.respond_json(200 if ready else 503, {"status": "ready" if ready else "not ready", **detail})
        elif path == b"/routes":
            ex.respond_json(200, {"routes": self.gateway.routes_view()})
        elif path == b"/metrics":
            body, content_type = self.gateway.env.metrics.exposition()
            if self.workers is not None:
                body = await self.workers.gather()
            ex.respond(200, [(b"content-type", content_type.encode())], body)
        else:
            ex.respond_problem(
                404,
                "Not Found",
                "admin endpoints: /healthz, /readyz, /routes, /splits, /strangler, /breakers, /instances, "
                "/metrics, POST /reload, POST /cache/purge, POST /strangler/<route>/<command>, "
                "POST /instances/drain, POST /instances/undrain",
            )

    async def _reload(self, ex: Exchange) -> None:
        if ex.method != b"POST":
            ex.respond_problem(405, "Method Not Allowed", headers=[(b"allow", b"POST")])
            return
        if self.reloader is None:
            ex.respond_problem(
                409, "Conflict", "this gateway was not started from a config file; there is nothing to reload"
            )
            return
        result = await self.reloader.reload("admin")
        status = _RELOAD_STATUS[result.status]
        if status == 200:
            ex.respond_json(200, result.to_json())
            return
        title = "Config Refused" if result.status == "refused" else "Reload Failed"
        members = result.to_json()
        detail = members.pop("detail", "")
        members["outcome"] = members.pop("status")  # "status" is the problem's HTTP status
        ex.respond_problem(status, title, detail, members=members)
