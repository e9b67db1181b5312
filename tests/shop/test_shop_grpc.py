"""The order saga's inventory calls over gRPC (the shop's inside transport ``grpc``).

Inventory serves ``shop.inventory.v1.Inventory`` on a real port beside its HTTP app; the saga's
steps call it through the kit's typed client as the orders service does, with tokens signed by a
real JWKS. What is pinned: the orders service's identity, the step's idempotency key and its
deadline reach inventory; a caller without the role holds nothing; a refusal fails the step for
good; an inventory that hangs or is gone is a retry of the step (and, in the end, the order's
compensation), never a hang.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc_helpers import Issuer, identity_settings, issuer

from conftest import delete_nats_streams, held_ports, require
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.demo.shop.inventory import rpc as inventory_rpc
from edgeway.demo.shop.inventory.app import ReservationIn
from edgeway.demo.shop.inventory.app import create_app as inventory_app
from edgeway.demo.shop.orders import saga as order_saga
from edgeway.demo.shop.orders.app import OrdersSettings
from edgeway.resilience.breaker import BreakerPolicy
from edgeway.saga import RetryableError, StepContext, StepFailed
from edgeway.service import Identity
from edgeway.service.clients import RetryPolicy
from edgeway.service.deadline import remaining
from edgeway.service.discovery import StaticDiscovery
from edgeway.service.grpc import GrpcChannel, caller, current_call

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def signer() -> AsyncIterator[Issuer]:
    async with issuer() as found:
        yield found


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    require("nats")
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    await delete_nats_streams(name)


def _settings(tmp_path: Path, prefix: str, signer: Issuer, **more: Any) -> dict[str, Any]:
    return {
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/{uuid.uuid4().hex[:6]}.db",
        "data_dir": tmp_path,
        "nats_url": "nats://127.0.0.1:4222",
        "bus_prefix": prefix,
        "token_audience": None,
        **identity_settings(signer),
        **more,
    }


@asynccontextmanager
async def inventory(
    tmp_path: Path, prefix: str, signer: Issuer, port: int | None = None
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """Inventory serving gRPC on a port of its own (``port``: that one again); its gRPC address
    and an HTTP client of it."""
    port = port if port is not None else held_ports(1)[0]
    app = inventory_app(ShopSettings(**_settings(tmp_path, prefix, signer, grpc_port=port)))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://inventory") as client:
            yield f"grpc://127.0.0.1:{port}", client


class _Token:
    def __init__(self, value: str) -> None:
        self.value = value
        self.forgotten = 0

    async def token(self) -> str:
        return self.value

    def forget(self) -> None:
        self.forgotten += 1

    async def aclose(self) -> None:
        return None


class _Kit:
    def __init__(self, url: str) -> None:
        self.channel = GrpcChannel(
            "inventory",
            StaticDiscovery({"inventory": [url]}),
            timeout=5.0,
            retry=RetryPolicy(attempts=2),
            breaker=BreakerPolicy(open_for=1.0),
        )

    def grpc_client(self, service: str, stub: Any) -> Any:
        assert service == "inventory"
        return stub(self.channel)


class _Orders:
    """What the saga's steps read of OrdersService: settings, token, kit, and the order's status."""

    def __init__(self, url: str, token: str, step_timeout: float = 3.0) -> None:
        self.settings = OrdersSettings(inside_transport="grpc", step_timeout=step_timeout)
        self.token = _Token(token)
        self.kit = _Kit(url)
        self.statuses: list[str] = []
        self.reasons: list[str] = []

    async def set_status(self, order_id: str, status: str, *, reason: str | None = None) -> None:
        self.statuses.append(status)

    async def set_reason(self, order_id: str, reason: str) -> None:
        self.reasons.append(reason)


def _step(service: _Orders, name: str) -> Any:
    return {s.name: s for s in order_saga.build_saga(service).steps}[name]  # type: ignore[arg-type]


def _ctx(step: str, *items: tuple[str, int], compensating: bool = False) -> StepContext[Any]:
    data = order_saga.OrderData(
        order_id="ord-1",
        customer="alice",
        total_cents=1,
        items=[order_saga.Line(sku=s, qty=q) for s, q in items],
    )
    return StepContext(
        saga_id="ord-1",
        saga_name="place_order",
        step=step,
        attempt=1,
        data=data,
        results={},
        compensating=compensating,
        request_id="req-grpc-1",
        traceparent="00-" + "1" * 32 + "-" + "1" * 16 + "-01",
        started_at=0.0,
    )


async def _available(client: httpx.AsyncClient, sku: str) -> int:
    return int((await client.get(f"/stock/{sku}")).json()["available"])


def _service_token(signer: Issuer, roles: list[str] | None = None) -> str:
    return signer.token("orders-service", roles=roles if roles is not None else ["service"])


async def test_a_reserve_over_grpc_carries_the_services_identity_the_step_key_and_its_deadline(
    tmp_path: Path, prefix: str, signer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[Identity, dict[str, str], float | None]] = []
    from edgeway.demo.shop.inventory.app import hold

    async def watching(svc: Any, body: ReservationIn) -> Any:
        seen.append((await caller(), dict(current_call().metadata), remaining()))
        return await hold(svc, body)

    monkeypatch.setattr(inventory_rpc, "hold", watching)
    async with inventory(tmp_path, prefix, signer) as (url, http):
        before = await _available(http, "BEA-01")
        orders = _Orders(url, _service_token(signer), step_timeout=3.0)
        result = await _step(orders, "reserve").action(_ctx("reserve", ("BEA-01", 2)))
        assert result == {"order_id": "ord-1", "status": "held", "items": [{"sku": "BEA-01", "qty": 2}]}
        assert orders.statuses == ["reserved"]
        assert await _available(http, "BEA-01") == before - 2
        # the saga repeats the step after a timeout: held once, the same answer
        assert await _step(orders, "reserve").action(_ctx("reserve", ("BEA-01", 2))) == result
        assert await _available(http, "BEA-01") == before - 2

        identity, metadata, budget = seen[0]
        assert identity.subject == "orders-service"
        assert "service" in identity.roles
        assert metadata["idempotency-key"] == "ord-1:reserve"
        assert metadata["x-request-id"] == "req-grpc-1"
        assert budget is not None
        assert 2.0 < budget <= 3.0

        # compensation and confirmation take the same road
        await _step(orders, "reserve").compensate(_ctx("reserve", ("BEA-01", 2), compensating=True))
        assert await _available(http, "BEA-01") == before
        await orders.kit.channel.close()


async def test_a_caller_without_the_service_role_holds_nothing_over_grpc(
    tmp_path: Path, prefix: str, signer: Issuer
) -> None:
    async with inventory(tmp_path, prefix, signer) as (url, http):
        before = await _available(http, "BEA-01")
        orders = _Orders(url, _service_token(signer, roles=["customer"]))
        with pytest.raises(RetryableError, match="PERMISSION_DENIED"):
            await _step(orders, "reserve").action(_ctx("reserve", ("BEA-01", 1)))
        assert await _available(http, "BEA-01") == before
        assert orders.statuses == []
        # a token inventory cannot verify: fetched again, the step tried again
        orders = _Orders(url, "not-a-token")
        with pytest.raises(RetryableError, match="refused the service token"):
            await _step(orders, "reserve").action(_ctx("reserve", ("BEA-01", 1)))
        assert orders.token.forgotten == 1
        await orders.kit.channel.close()


async def test_out_of_stock_over_grpc_fails_the_step_for_good_with_the_reason(
    tmp_path: Path, prefix: str, signer: Issuer
) -> None:
    async with inventory(tmp_path, prefix, signer) as (url, http):
        before = await _available(http, "BEA-01")
        orders = _Orders(url, _service_token(signer))
        with pytest.raises(StepFailed) as failed:
            await _step(orders, "reserve").action(_ctx("reserve", ("BEA-01", before + 1)))
        assert str(failed.value).startswith("not enough stock for BEA-01")
        assert orders.reasons == [str(failed.value)]
        assert orders.statuses == []
        assert await _available(http, "BEA-01") == before
        await orders.kit.channel.close()


async def test_an_inventory_that_hangs_past_the_step_deadline_is_a_retry_not_a_hang(
    tmp_path: Path, prefix: str, signer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancelled = asyncio.Event()

    async def hanging(svc: Any, body: ReservationIn) -> Any:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()  # gRPC cancelled the handler when the deadline passed

    monkeypatch.setattr(inventory_rpc, "hold", hanging)
    async with inventory(tmp_path, prefix, signer) as (url, _http):
        orders = _Orders(url, _service_token(signer), step_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(RetryableError, match="inventory unreachable"):
            await _step(orders, "reserve").action(_ctx("reserve", ("BEA-01", 1)))
        assert time.monotonic() - started < 2.5
        await asyncio.wait_for(cancelled.wait(), 2.0)
        await orders.kit.channel.close()


async def _saga(http: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    answer = await http.get(f"/orders/{order_id}/saga", headers={"X-Edgeway-Subject": "alice"})
    return dict(answer.json())


async def _until(http: httpx.AsyncClient, order_id: str, statuses: set[str], within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        saga = await _saga(http, order_id)
        if saga["status"] in statuses or time.monotonic() > deadline:
            return saga
        await asyncio.sleep(0.3)


async def test_with_inventory_gone_an_order_is_retried_then_compensated_not_stuck(
    tmp_path: Path, prefix: str, signer: Issuer
) -> None:
    from edgeway.demo.shop.orders.app import create_app as orders_app

    port = held_ports(1)[0]
    async with inventory(tmp_path, prefix, signer, port) as (url, _http):
        pass  # served, then stopped: nothing listens on its gRPC port any more
    settings = OrdersSettings(
        **_settings(tmp_path, prefix, signer),
        inside_transport="grpc",
        grpc_services={"inventory": [url]},
        step_timeout=1.0,
        breaker_open_for=0.5,
        trust_gateway_headers=True,
    )
    app = orders_app(settings)
    async with app.router.lifespan_context(app):
        service = app.state.service
        await service.token.aclose()  # no security service here: tokens signed by the test's JWKS
        service.token = _Token(_service_token(signer))
        async with service.db.sessions() as session, session.begin():
            await session.execute(
                service.catalog.insert().values(
                    sku="BEA-01", name="Beans", category="beans", price_cents=1450, version=1
                )
            )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://orders") as http:
            placed = await http.post(
                "/orders",
                json={"items": [{"sku": "BEA-01", "qty": 1}]},
                headers={"X-Edgeway-Subject": "alice", "X-Edgeway-Roles": "customer"},
            )
            assert placed.status_code == 202, placed.text
            order_id = placed.json()["id"]
            # the reserve step's retries (~12 s of backoff), each refused at once, then compensation
            saga = await _until(http, order_id, {"compensating", "compensated", "failed"}, 40)
            assert saga["status"] == "compensating"
            reserve = next(s for s in saga["steps"] if s["name"] == "reserve")
            assert reserve["attempts"] == 6
            assert "inventory unreachable" in (reserve["error"] or "")
            # releasing needs inventory: the compensation waits for it to come back, then ends
            async with inventory(tmp_path, prefix, signer, port):
                saga = await _until(http, order_id, {"compensated", "failed"}, 40)
            assert saga["status"] == "compensated"
            order = (await http.get(f"/orders/{order_id}", headers={"X-Edgeway-Subject": "alice"})).json()
            assert order["status"] == "cancelled"
            assert "inventory unreachable" in order["reason"]


async def test_stock_over_grpc_answers_what_the_json_route_answers(
    tmp_path: Path, prefix: str, signer: Issuer
) -> None:
    from edgeway.demo.shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

    async with inventory(tmp_path, prefix, signer) as (url, http):
        kit = _Kit(url)
        stub = kit.grpc_client("inventory", inventory_pb2_grpc.InventoryStub)
        some = await stub.Stock(inventory_pb2.StockRequest(skus=["BEA-01", "CUP-01", "NOPE-1"]))
        assert [level.sku for level in some.levels] == ["BEA-01", "CUP-01"]  # an unknown SKU: absent
        every = await stub.Stock(inventory_pb2.StockRequest())
        listed = (await http.get("/stock")).json()
        assert [
            {"sku": s.sku, "on_hand": s.on_hand, "reserved": s.reserved, "available": s.available}
            for s in every.levels
        ] == listed
        await kit.channel.close()
