from __future__ import annotations

import httpx
from servers import serve

from edgeway.service import Problem, ServiceSettings, create_app
from edgeway.service.errors import CircuitOpenError, NoInstancesError


async def test_problem_exceptions_and_kit_errors_render_as_rfc9457() -> None:
    app = create_app("orders", settings=ServiceSettings(), configure_logging=False)

    @app.get("/out-of-stock")
    async def out_of_stock() -> None:
        raise Problem(409, "item 7 is out of stock", type="https://errors.shop/out-of-stock", item=7)

    @app.get("/circuit")
    async def circuit() -> None:
        raise CircuitOpenError("inventory", 12.3)

    @app.get("/nobody")
    async def nobody() -> None:
        raise NoInstancesError("inventory", "static+env")

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        conflict = await http.get("/out-of-stock", headers={"X-Request-ID": "p-1"})
        circuit_open = await http.get("/circuit")
        no_instances = await http.get("/nobody")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert conflict.json() == {
        "type": "https://errors.shop/out-of-stock",
        "title": "Conflict",
        "status": 409,
        "detail": "item 7 is out of stock",
        "instance": "/out-of-stock",
        "request_id": "p-1",
        "item": 7,
    }
    assert circuit_open.status_code == 503
    assert circuit_open.headers["retry-after"] == "12"
    assert circuit_open.json()["service"] == "inventory"
    assert no_instances.status_code == 503
    assert "EDGEWAY_SERVICE_INVENTORY_URLS" in no_instances.json()["detail"]
