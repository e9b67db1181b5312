"""The admin port: /healthz (the process runs), /readyz (it can serve), /routes (what it serves),
/metrics (Prometheus exposition of the gateway's metrics).

Served by the same engine as the traffic port, on its own listener, so a saturated traffic port
does not hide the gateway's health from the orchestrator.
"""

from __future__ import annotations

from edgeway.gateway.runtime import Gateway
from edgeway.http.exchange import Exchange


class AdminHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.draining = False

    async def __call__(self, ex: Exchange) -> None:
        if ex.method not in (b"GET", b"HEAD"):
            ex.respond_problem(405, "Method Not Allowed", headers=[(b"allow", b"GET, HEAD")])
            return
        path = ex.path
        if path == b"/healthz":
            ex.respond_json(200, {"status": "ok", "service": self.gateway.name})
        elif path == b"/readyz":
            ready, detail = self.gateway.ready()
            if self.draining:
                ready, detail = False, {**detail, "draining": True}
            ex.respond_json(200 if ready else 503, {"status": "ready" if ready else "not ready", **detail})
        elif path == b"/routes":
            ex.respond_json(200, {"routes": self.gateway.routes_view()})
        elif path == b"/metrics":
            body, content_type = self.gateway.env.metrics.exposition()
            ex.respond(200, [(b"content-type", content_type.encode())], body)
        else:
            ex.respond_problem(404, "Not Found", "admin endpoints: /healthz, /readyz, /routes, /metrics")
