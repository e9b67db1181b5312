"""A control room for one ``edgeway demo``: its settings read from the plan, its process view and
its log feed from the supervisor."""

from __future__ import annotations

from edgeway.demo.control.health import ProcessView
from edgeway.demo.control.server import ControlRoom, ControlRoomSettings
from edgeway.demo.control.spans import node_of_process
from edgeway.demo.plan import CONFIG_BUCKET, HttpReady, ShopPlan
from edgeway.demo.supervisor import Supervisor

__all__ = ["control_room"]


def control_room(
    plan: ShopPlan, supervisor: Supervisor, user: tuple[str, str], partner: tuple[str, str]
) -> ControlRoom:
    specs = plan.processes()
    edges = plan.edges()
    links = {"web app, Direct": f"{plan.url('web')}/"}
    if "web-bff" in edges:
        links["web app, web BFF"] = f"{plan.url('web-bff')}/"
    if "mobile-bff" in edges:
        links["mobile BFF"] = f"{plan.url('mobile-bff')}/m/home"
    if "gateway" in edges:
        links["API gateway"] = f"{plan.url('gateway')}/v1/products"
    settings = ControlRoomSettings(
        host=plan.host,
        port=plan.ports["control"],
        ports=dict(plan.ports),
        edges=edges,
        pattern=plan.pattern,
        admin_token=plan.admin_token,
        nats_url=plan.nats_url,
        config_bucket=CONFIG_BUCKET,
        security_url=plan.security_url,
        user=user,
        partner=partner,
        ready_urls={s.name: s.ready.url for s in specs if isinstance(s.ready, HttpReady)},
        links=links,
    )

    def processes() -> list[ProcessView]:
        return [ProcessView(p.name, p.spec.role, p.state, p.restarts) for p in supervisor.procs.values()]

    nodes = {s.name: node_of_process(s.name) for s in specs if s.name != "nats"}
    nodes["nats"] = "broker"
    room = ControlRoom(settings, processes, nodes)
    supervisor.on_line = room.on_line
    return room
