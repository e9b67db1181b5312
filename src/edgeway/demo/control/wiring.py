"""A control room for one ``edgeway demo``: its settings read from the plan, its process view and
its log feed from the supervisor.

The reference shop gets the whole room: its clients (a browser, a mobile app, a partner), its
links, and the patterns side by side on its screens. Another system (``edgeway demo --system
FILE``) gets what holds for any system: its topology, traces, rates, health, breakers and flags.
"""

from __future__ import annotations

from edgeway.demo.control.collector import CLIENTS
from edgeway.demo.control.health import ProcessView
from edgeway.demo.control.server import ControlRoom, ControlRoomSettings
from edgeway.demo.control.spans import node_of_process
from edgeway.demo.plan import HttpReady, ShopPlan
from edgeway.demo.supervisor import Supervisor

__all__ = ["control_room"]


def control_room(
    plan: ShopPlan, supervisor: Supervisor, user: tuple[str, str], partner: tuple[str, str]
) -> ControlRoom:
    specs = plan.processes()
    edges = plan.edges()
    links: dict[str, str] = {}
    if plan.is_shop:
        links["web app, Direct"] = f"{plan.url('web')}/"
        if "web-bff" in edges:
            links["web app, web BFF"] = f"{plan.url('web-bff')}/"
        if "mobile-bff" in edges:
            links["mobile BFF"] = f"{plan.url('mobile-bff')}/m/home"
        if "gateway" in edges:
            links["API gateway"] = f"{plan.url('gateway')}/v1/products"
    else:
        links.update({edge: f"{plan.url(edge)}/" for edge in edges})
    settings = ControlRoomSettings(
        host=plan.host,
        port=plan.ports["control"],
        ports=dict(plan.ports),
        edges=edges,
        pattern=plan.pattern,
        admin_token=plan.admin_token,
        nats_url=plan.nats_url,
        config_bucket=plan.system.broker.config_bucket,
        security_url=plan.security_url if plan.is_shop else "",
        user=user,
        partner=partner,
        ready_urls={s.name: s.ready.url for s in specs if isinstance(s.ready, HttpReady)},
        links=links,
        shop=plan.is_shop,
        services=list(plan.system.services),
    )

    def processes() -> list[ProcessView]:
        return [ProcessView(p.name, p.spec.role, p.state, p.restarts) for p in supervisor.procs.values()]

    nodes = {s.name: node_of_process(s.name) for s in specs if s.name != "nats"}
    nodes["nats"] = "broker"
    room = ControlRoom(settings, processes, nodes, clients=CLIENTS if plan.is_shop else {})
    supervisor.on_line = room.on_line
    return room
