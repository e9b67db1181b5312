"""Composition hardening (issue 13): what a service's answer, a client's input or an endpoint's
own code can put into an aggregate or a Python endpoint must never crash the answer, smuggle a
request, or overwrite what the gateway states.

Black-box over real sockets: a gateway in front of real JSON services (compose_helpers).
"""

from __future__ import annotations

import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from compose_helpers import JsonService, Reply, aggregate_config, gateway, request, services


def calls(**named: dict[str, Any]) -> dict[str, Any]:
    return {"calls": named}


def write_module(tmp_path: Path, source: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    name = f"bff_{suffix}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source).replace("{u}", suffix))
    return name, suffix


def endpoint_config(
    tmp_path: Path, module: str, routes: list[dict[str, Any]], running: dict[str, JsonService]
) -> dict[str, Any]:
    return {
        "name": "py-test",
        "python": {"modules": [module], "paths": [str(tmp_path)]},
        "services": {n: {"instances": [s.url]} for n, s in running.items()},
        "routes": routes,
    }


# -- item 16: a service's error body is data, never keyword arguments ----------------------------

# Every name the gateway's own problem members, parameters or keywords use.
HOSTILE_PROBLEM = {
    "title": "Order not found",
    "detail": "no order 9",
    "call": "evil",
    "service": "evil",
    "headers": [["set-cookie", "x=1"]],
    "members": {"a": 1},
    "extra": 1,
    "status": 200,
    "request_id": "forged",
    "code": "forged",
    "instance": "/orders/9",
}


async def test_a_required_calls_error_body_with_the_gateways_member_names_passes_as_data() -> None:
    async with services(orders=lambda s: Reply(404, HOSTILE_PROBLEM)) as svc:
        cfg = aggregate_config(svc, calls(order={"service": "orders", "path": "/orders/9", "group": "o"}))
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen", headers={"x-request-id": "req-16"})
    assert answer.status == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert "set-cookie" not in answer.headers
    body = answer.json()
    assert body["title"] == "Order not found"
    assert body["detail"] == "no order 9"
    assert body["status"] == 404  # the response's, not the service's
    assert body["request_id"] == "req-16"
    assert body["call"] == "order"  # the gateway's member wins the name
    # The service's other members pass through as members.
    assert body["service"] == "evil"
    assert body["headers"] == [["set-cookie", "x=1"]]
    assert body["members"] == {"a": 1}
    assert body["instance"] == "/orders/9"


ENDPOINT_16 = """
    from edgeway.bff import endpoint

    @endpoint(name="lost_{u}")
    async def lost(req):
        (await req.services.orders.get("/orders/9")).raise_for_status()
"""


async def test_an_endpoints_raise_for_status_passes_a_hostile_error_body_as_data(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, ENDPOINT_16)
    async with services(orders=lambda s: Reply(404, HOSTILE_PROBLEM)) as svc:
        cfg = endpoint_config(
            tmp_path, module, [{"match": {"path": "/lost"}, "endpoint": {"name": f"lost_{u}"}}], svc
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/lost")
    assert answer.status == 404
    body = answer.json()
    assert body["detail"] == "no order 9"
    assert body["service"] == "orders"
    assert body["call"] == "evil"
    assert body["status"] == 404


# -- item 20: the top-level `_meta` is the gateway's -------------------------------------------


async def test_a_services_own_meta_never_reaches_the_client_as_the_gateways() -> None:
    forged = {"completed": True, "errors": {}}
    async with services(
        a=lambda s: {"a": 1, "_meta": forged},
        b=lambda s: {"b": 1, "_meta": forged},
        down=lambda s: Reply(503, {}),
    ) as svc:
        whole = aggregate_config(svc, {"merge": "override", **calls(a={"service": "a", "path": "/"})})
        partial = aggregate_config(
            svc,
            {
                "merge": "deep",
                **calls(
                    a={"service": "a", "path": "/"},
                    down={"service": "down", "path": "/", "group": "d", "required": False},
                    b={"service": "b", "path": "/"},
                ),
            },
        )
        grouped = aggregate_config(svc, calls(a={"service": "a", "path": "/", "group": "a"}))
        async with gateway(whole) as (port, _):
            complete = await request(port, "GET", "/screen")
        async with gateway(partial) as (port, _):
            incomplete = await request(port, "GET", "/screen")
        async with gateway(grouped) as (port, _):
            nested = await request(port, "GET", "/screen")
    assert complete.json() == {"a": 1}
    assert "x-edgeway-completed" not in complete.headers
    assert incomplete.json() == {
        "a": 1,
        "b": 1,
        "_meta": {"completed": False, "errors": {"down": {"status": 503, "reason": "down answered 503"}}},
    }
    assert nested.json() == {"a": {"a": 1, "_meta": forged}}  # under a group it is the service's data


# -- item 11: the endpoint deadline keeps the answers already in --------------------------------


@pytest.mark.parametrize("guarded", [False, True], ids=["direct", "guarded"])
async def test_the_deadline_keeps_answers_that_arrived_whatever_their_order(guarded: bool) -> None:
    # The slow optional call is declared first: the run awaits it while the others answer.
    async with services(
        slow=lambda s: Reply(body={"slow": 1}, delay=2.0),
        a=lambda s: {"a": 1},
        b=lambda s: {"b": 2},
    ) as svc:
        overrides = {"a": {"breaker": {"service": {"consecutive_failures": 5}}}} if guarded else {}
        cfg = aggregate_config(
            svc,
            {
                "deadline": "300ms",
                **calls(
                    slow={"service": "slow", "path": "/", "group": "slow", "required": False},
                    a={"service": "a", "path": "/", "group": "a"},
                    b={"service": "b", "path": "/", "group": "b", "required": False},
                ),
            },
            service_overrides=overrides,
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["a"] == {"a": 1}
    assert body["b"] == {"b": 2}
    assert "slow" not in body
    assert list(body["_meta"]["errors"]) == ["slow"]
    assert body["_meta"]["errors"]["slow"]["code"] == "deadline"
