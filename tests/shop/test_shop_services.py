"""The shop's services one at a time, in-process, on SQLite and on PostgreSQL.

What the saga relies on is pinned here without starting the whole system: inventory's and
payments' calls are idempotent and tolerate "nothing to undo", the catalog writes its events in
the transaction of the change. Callers are identified by gateway headers (the services run with
``trust_gateway_headers``); the bus is the NATS on 4222 with a prefix of the test's own.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from conftest import delete_nats_streams, require
from edgeway.demo.shop.catalog.app import create_app as catalog_app
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.demo.shop.inventory.app import create_app as inventory_app
from edgeway.demo.shop.payments.app import create_app as payments_app
from edgeway.service import Flags, kit_of

S = TypeVar("S", bound=ShopSettings)

SERVICE = {"X-Edgeway-Subject": "orders-service", "X-Edgeway-Roles": "service"}
ADMIN = {"X-Edgeway-Subject": "ada", "X-Edgeway-Roles": "admin"}
ALICE = {"X-Edgeway-Subject": "alice", "X-Edgeway-Roles": "customer"}


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/service.db"
        return
    require("postgres")
    import asyncpg

    name = f"shop_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def settings(database_url: str, tmp_path: Path) -> AsyncIterator[ShopSettings]:
    require("nats")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield ShopSettings(
        database_url=database_url,
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:4222",
        bus_prefix=prefix,
        trust_gateway_headers=True,
    )
    await delete_nats_streams(prefix)


@asynccontextmanager
async def serving(factory: Callable[[S], FastAPI], settings: S) -> AsyncIterator[httpx.AsyncClient]:
    app = factory(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


# -- inventory ------------------------------------------------------------------------------------


async def _available(client: httpx.AsyncClient, sku: str) -> int:
    return int((await client.get(f"/stock/{sku}")).json()["available"])


async def test_a_reservation_holds_stock_once_however_often_it_is_sent(settings: ShopSettings) -> None:
    async with serving(inventory_app, settings) as inv:
        before = await _available(inv, "POT-01")
        body = {"order_id": "o-1", "items": [{"sku": "POT-01", "qty": 2}, {"sku": "POT-01", "qty": 1}]}
        first = await inv.post("/reservations", json=body, headers=SERVICE)
        again = await inv.post("/reservations", json=body, headers=SERVICE)
        assert (first.status_code, again.status_code) == (201, 200)
        assert (
            first.json()
            == again.json()
            == {"order_id": "o-1", "status": "held", "items": [{"sku": "POT-01", "qty": 3}]}
        )
        assert await _available(inv, "POT-01") == before - 3

        committed = await inv.post("/reservations/o-1/commit", headers=SERVICE)
        assert committed.json()["status"] == "committed"
        assert (await inv.post("/reservations/o-1/commit", headers=SERVICE)).status_code == 200
        stock = (await inv.get("/stock/POT-01")).json()
        assert (stock["reserved"], stock["available"]) == (0, before - 3)
        # a confirmed order's stock cannot be "given back" by a late compensation: the answer
        # says so definitely (not a conflict to retry forever), and nothing moves
        late = await inv.delete("/reservations/o-1", headers=SERVICE)
        assert (late.status_code, late.json()["status"]) == (200, "committed")
        assert (await inv.get("/stock/POT-01")).json()["available"] == before - 3


async def test_a_reservation_is_all_or_nothing(settings: ShopSettings) -> None:
    async with serving(inventory_app, settings) as inv:
        before = {sku: await _available(inv, sku) for sku in ("CUP-01", "SCL-01")}
        response = await inv.post(
            "/reservations",
            json={"order_id": "o-2", "items": [{"sku": "CUP-01", "qty": 1}, {"sku": "SCL-01", "qty": 2}]},
            headers=SERVICE,
        )
        assert response.status_code == 409
        problem = response.json()
        assert problem["type"].endswith("/out-of-stock")
        assert problem["shortages"] == [{"sku": "SCL-01", "wanted": 2, "available": 1}]
        assert {sku: await _available(inv, sku) for sku in before} == before


async def test_a_release_before_the_reservation_refuses_the_late_reservation(settings: ShopSettings) -> None:
    async with serving(inventory_app, settings) as inv:
        before = await _available(inv, "GRD-01")
        released = await inv.delete("/reservations/o-3", headers=SERVICE)
        assert released.json()["status"] == "released"
        assert (await inv.delete("/reservations/o-3", headers=SERVICE)).status_code == 200
        late = await inv.post(
            "/reservations", json={"order_id": "o-3", "items": [{"sku": "GRD-01", "qty": 1}]}, headers=SERVICE
        )
        assert late.status_code == 409
        assert late.json()["type"].endswith("/reservation-released")
        assert await _available(inv, "GRD-01") == before


async def test_releasing_gives_the_held_stock_back_once(settings: ShopSettings) -> None:
    async with serving(inventory_app, settings) as inv:
        before = await _available(inv, "BEA-02")
        body = {"order_id": "o-4", "items": [{"sku": "BEA-02", "qty": 5}]}
        assert (await inv.post("/reservations", json=body, headers=SERVICE)).status_code == 201
        for _ in range(2):
            assert (await inv.delete("/reservations/o-4", headers=SERVICE)).json()["status"] == "released"
        assert await _available(inv, "BEA-02") == before


async def test_customers_cannot_reserve_or_release(settings: ShopSettings) -> None:
    async with serving(inventory_app, settings) as inv:
        body = {"order_id": "o-5", "items": [{"sku": "CUP-01", "qty": 1}]}
        assert (await inv.post("/reservations", json=body, headers=ALICE)).status_code == 403
        assert (await inv.delete("/reservations/o-5", headers=ALICE)).status_code == 403
        assert (await inv.post("/reservations", json=body)).status_code == 401


# -- payments -------------------------------------------------------------------------------------


def _charge(order: str, amount: int = 1000) -> dict[str, Any]:
    return {"order_id": order, "customer": "alice", "amount_cents": amount}


async def test_a_charge_is_made_once_per_idempotency_key(settings: ShopSettings) -> None:
    async with serving(payments_app, settings) as pay:
        key = {"Idempotency-Key": "saga-1:charge", **SERVICE}
        first = await pay.post("/payments", json=_charge("o-1"), headers=key)
        again = await pay.post("/payments", json=_charge("o-1"), headers=key)
        assert (first.status_code, again.status_code) == (201, 200)
        assert first.json() == again.json()
        assert first.json()["status"] == "captured"
        other = await pay.post("/payments", json=_charge("o-9"), headers=key)
        assert other.status_code == 422
        assert "was used for another request" in other.json()["detail"]
        assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_the_fail_flag_declines_and_the_decline_is_the_answer_to_every_repeat(
    settings: ShopSettings,
) -> None:
    async with serving(payments_app, settings) as pay:
        kit = kit_of(pay.app)  # type: ignore[attr-defined]
        kit.flags = Flags({"flags.payments.fail": True})
        declined = await pay.post("/payments", json=_charge("o-2"), headers=SERVICE)
        assert declined.status_code == 402
        assert declined.json()["type"].endswith("/payment-declined")
        kit.flags = Flags({"flags.payments.fail": False})
        assert (await pay.post("/payments", json=_charge("o-2"), headers=SERVICE)).status_code == 402
        refund = await pay.post("/payments/o-2/refund", headers=SERVICE)
        assert refund.json()["status"] == "declined"  # nothing was taken, nothing to give back


async def test_refunds_are_idempotent_and_tolerate_nothing_to_refund(settings: ShopSettings) -> None:
    async with serving(payments_app, settings) as pay:
        assert (await pay.post("/payments/o-none/refund", headers=SERVICE)).json()[
            "status"
        ] == "nothing to refund"
        await pay.post("/payments", json=_charge("o-3"), headers=SERVICE)
        for _ in range(2):
            assert (await pay.post("/payments/o-3/refund", headers=SERVICE)).json()["status"] == "refunded"
        assert (await pay.get("/payments/o-3", headers=ALICE)).json()["status"] == "refunded"
        assert (await pay.get("/payments/o-3", headers={"X-Edgeway-Subject": "bob"})).status_code == 404


# -- catalog --------------------------------------------------------------------------------------


async def test_a_price_change_bumps_the_version_and_writes_its_event_in_the_same_transaction(
    settings: ShopSettings,
) -> None:
    async with serving(catalog_app, settings) as cat:
        service = cat.app.state.service  # type: ignore[attr-defined]
        before = (await cat.get("/products/GRD-02")).json()
        response = await cat.put("/products/GRD-02/price", json={"price_cents": 14900}, headers=ADMIN)
        assert response.status_code == 200
        assert response.json()["version"] == before["version"] + 1
        assert response.headers["x-served-by"]
        outbox = service.outbox.table
        async with service.db.sessions() as session:
            rows = (
                await session.execute(select(outbox).where(outbox.c.event_type == "catalog.price.changed.v1"))
            ).all()
        assert len(rows) == 1
        assert b'"previous_price_cents":15900' in rows[0].payload
        assert (
            await cat.put("/products/GRD-02/price", json={"price_cents": 1}, headers=ALICE)
        ).status_code == 403
        assert (
            await cat.put("/products/NOPE-1/price", json={"price_cents": 1}, headers=ADMIN)
        ).status_code == 404


# -- local copies on either broker ------------------------------------------------------------------


@pytest.mark.parametrize("broker", ["nats", "rabbitmq"])
async def test_a_copy_created_after_the_events_fills_itself_from_the_stream(
    broker: str, tmp_path: Path
) -> None:
    """A service started after the catalog published still gets every product: on RabbitMQ its
    queue did not exist then, so the copy is rebuilt from the channel's history at start."""
    from edgeway.bus.brokers import transport_for
    from edgeway.bus.bus import EventBus
    from edgeway.demo.shop.common.events import CHANNELS, PriceChanged
    from edgeway.demo.shop.notifications.app import NotificationsSettings
    from edgeway.demo.shop.notifications.app import create_app as notifications_app

    require(broker)
    url = "nats://127.0.0.1:4222" if broker == "nats" else "amqp://guest:guest@127.0.0.1:5672/"
    prefix = f"t{uuid.uuid4().hex[:10]}"
    publisher = EventBus(transport_for(url, prefix), channels=CHANNELS)
    await publisher.start()
    try:
        for version, price in ((1, 1000), (2, 1200)):
            await publisher.publish(
                PriceChanged(
                    sku="MUG-9",
                    name="Mug",
                    category="cups",
                    price_cents=price,
                    previous_price_cents=900,
                    version=version,
                )
            )
    finally:
        await publisher.stop()
    settings = NotificationsSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/n.db",
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:4222",
        bus_url=url,
        bus_prefix=prefix,
        trust_gateway_headers=True,
    )
    try:
        async with serving(notifications_app, settings) as svc:
            copy = (await svc.get("/catalog-copy/MUG-9")).json()
            assert (copy["price_cents"], copy["version"]) == (1200, 2)
    finally:
        if broker == "nats":
            await delete_nats_streams(prefix)
        else:
            await _delete_rabbit(prefix)


async def _delete_rabbit(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    try:
        channel = await connection.channel()
        for channel_name in ("catalog", "orders", "jobs", "users"):
            base = f"{prefix}.{channel_name}"
            for queue in (
                f"{base}.history",
                f"{base}.notifications-catalog",
                f"{base}.notifications-orders",
                f"{base}.dlq",
            ):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(queue)
            for exchange in (base, f"{base}.dlx"):
                with contextlib.suppress(Exception):
                    await channel.exchange_delete(exchange)
    finally:
        await connection.close()


# -- bad input is a problem before anything is done -------------------------------------------------

HUGE = 2**64


def _problem(response: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


async def test_catalog_integers_beyond_their_columns_are_422(settings: ShopSettings) -> None:
    from edgeway.service import MAX_MONEY

    async with serving(catalog_app, settings) as cat:
        _problem(await cat.get("/products", params={"offset": HUGE}))  # no token needed
        assert (await cat.get("/products", params={"offset": 2**62})).json()["items"] == []
        product = {"sku": "BIG-1", "name": "Big", "category": "cups"}
        for price in (HUGE, 2**62, MAX_MONEY + 1):
            _problem(await cat.post("/products", json={**product, "price_cents": price}, headers=ADMIN))
            _problem(await cat.put("/products/GRD-02/price", json={"price_cents": price}, headers=ADMIN))
        created = await cat.post("/products", json={**product, "price_cents": MAX_MONEY}, headers=ADMIN)
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/products/BIG-1"


async def test_inventory_refuses_what_it_could_not_store_or_put_in_a_header(settings: ShopSettings) -> None:
    async with serving(inventory_app, settings) as inv:
        _problem(await inv.put("/stock/POT-01", json={"on_hand": HUGE}, headers=ADMIN))
        _problem(await inv.put("/stock/POT-01", json={"on_hand": 2**31}, headers=ADMIN))
        _problem(await inv.put("/stock/" + "A" * 40, json={"on_hand": 1}, headers=ADMIN))
        before = await _available(inv, "POT-01")
        for order_id in ("ordér-1", "o-1\r\nSet-Cookie: x=1", "o" * 65, ""):
            body = {"order_id": order_id, "items": [{"sku": "POT-01", "qty": 1}]}
            problem = _problem(await inv.post("/reservations", json=body, headers=SERVICE))
            assert problem["errors"][0]["field"] == "order_id"
        # nothing held for an order the saga was told failed
        assert await _available(inv, "POT-01") == before
        _problem(await inv.delete("/reservations/" + "o" * 65, headers=SERVICE))
        held = await inv.post(
            "/reservations",
            json={"order_id": "o:7@x", "items": [{"sku": "POT-01", "qty": 1}]},
            headers=SERVICE,
        )
        assert held.status_code == 201
        assert held.headers["location"] == "/reservations/o%3A7%40x"


async def test_payments_refuses_before_charging_what_it_could_not_answer(settings: ShopSettings) -> None:
    async with serving(payments_app, settings) as pay:
        _problem(await pay.post("/payments", json=_charge("o-1", HUGE), headers=SERVICE))
        for order_id in ("ordér-1", "o-2\nX: y"):
            _problem(await pay.post("/payments", json=_charge(order_id), headers=SERVICE))
        bad_key = {**SERVICE, "Idempotency-Key": "k" * 201}
        _problem(await pay.post("/payments", json=_charge("o-3"), headers=bad_key))
        service = pay.app.state.service  # type: ignore[attr-defined]
        from edgeway.demo.shop.payments.app import payments

        async with service.db.sessions() as session:
            assert (await session.execute(select(payments))).all() == []


async def _orders_serving(settings: ShopSettings) -> Any:
    from edgeway.demo.shop.orders.app import OrdersSettings
    from edgeway.demo.shop.orders.app import create_app as orders_app

    orders_settings = OrdersSettings(**settings.model_dump())
    return serving(lambda _s: orders_app(orders_settings), orders_settings)


async def _price(service: Any, sku: str, price: int) -> None:
    async with service.db.sessions() as session, session.begin():
        await session.execute(
            service.catalog.insert().values(sku=sku, name=sku, category="test", price_cents=price, version=1)
        )


async def test_an_order_total_beyond_any_amount_is_refused_before_it_is_placed(
    settings: ShopSettings,
) -> None:
    from edgeway.demo.shop.orders.app import orders
    from edgeway.service import MAX_MONEY

    async with await _orders_serving(settings) as svc:
        service = svc.app.state.service
        await _price(service, "BIG-1", MAX_MONEY)
        await _price(service, "HUGE-1", 2**62)  # a price the catalog accepted before its bound
        for sku in ("BIG-1", "HUGE-1"):
            problem = _problem(
                await svc.post("/orders", json={"items": [{"sku": sku, "qty": 2}]}, headers=ALICE)
            )
            assert problem["type"].endswith("/amount-too-large")
        async with service.db.sessions() as session:
            assert (await session.execute(select(orders))).all() == []


async def test_an_idempotency_key_reused_for_another_order_is_422(settings: ShopSettings) -> None:
    async with await _orders_serving(settings) as svc:
        service = svc.app.state.service
        await _price(service, "CUP-9", 1000)
        await _price(service, "POT-9", 2000)
        key = {**ALICE, "Idempotency-Key": "basket-1"}
        first = await svc.post("/orders", json={"items": [{"sku": "CUP-9", "qty": 2}]}, headers=key)
        assert first.status_code == 202, first.text
        # the same order, written another way (lines summed by SKU): the first answer
        same = await svc.post(
            "/orders", json={"items": [{"sku": "CUP-9", "qty": 1}, {"sku": "CUP-9", "qty": 1}]}, headers=key
        )
        assert same.status_code == 200
        assert same.json()["id"] == first.json()["id"]
        other = await svc.post("/orders", json={"items": [{"sku": "POT-9", "qty": 1}]}, headers=key)
        assert _problem(other)["type"].endswith("/idempotency-key-reused")


async def test_a_bulk_email_subject_that_cannot_be_a_header_is_refused_before_202(
    settings: ShopSettings,
) -> None:
    import base64

    import orjson

    from edgeway.demo.shop.notifications.app import NotificationsSettings
    from edgeway.demo.shop.notifications.app import create_app as notifications_app

    claims = base64.urlsafe_b64encode(orjson.dumps({"email": "alice@example.com"})).decode().rstrip("=")
    alice = {**ALICE, "X-Edgeway-Claims": claims}
    notify_settings = NotificationsSettings(**settings.model_dump())
    async with serving(lambda _s: notifications_app(notify_settings), notify_settings) as svc:
        for subject in ("Hi\r\nBcc: everyone@example.com", "Hi\nthere", "tab\there", "sep\u2028x"):
            _problem(await svc.post("/jobs/emails", json={"count": 1, "subject": subject}, headers=alice))
        crlf = base64.urlsafe_b64encode(orjson.dumps({"email": "a@x\r\nBcc: b@y"})).decode().rstrip("=")
        _problem(
            await svc.post("/jobs/emails", json={"count": 1}, headers={**ALICE, "X-Edgeway-Claims": crlf})
        )
        accepted = await svc.post("/jobs/emails", json={"count": 1, "subject": "Hi there"}, headers=alice)
        assert accepted.status_code == 202
        assert accepted.headers["location"] == f"/jobs/{accepted.json()['id']}"


async def test_the_legacy_app_answers_errors_as_problems(tmp_path: Path) -> None:
    from edgeway.demo.shop.legacy.app import create_app as legacy_app

    settings = ShopSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/legacy.db", data_dir=tmp_path)
    async with serving(legacy_app, settings) as legacy:
        missing = await legacy.get("/no/such/page")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["request_id"] == missing.headers["x-request-id"]


async def test_the_order_saga_confirms_after_its_pivot_and_treats_a_missing_peer_as_transient() -> None:
    from edgeway.demo.shop.orders import saga as order_saga
    from edgeway.demo.shop.orders.app import OrdersSettings
    from edgeway.saga import RetryableError, StepContext
    from edgeway.service.errors import NoInstancesError

    class _Client:
        async def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
            raise NoInstancesError("inventory", "registry+env")

    class _Token:
        async def authorization(self) -> dict[str, str]:
            return {}

    class _Kit:
        def client(self, peer: str) -> _Client:
            return _Client()

    class _Service:  # what the steps read of OrdersService before calling a peer
        settings = OrdersSettings(step_timeout=5.0)
        token = _Token()
        kit = _Kit()

    steps = {s.name: s for s in order_saga.build_saga(_Service()).steps}  # type: ignore[arg-type]
    assert [n for n, s in steps.items() if s.retriable] == ["confirm"]
    assert steps["confirm"].compensate is None
    data = order_saga.OrderData(order_id="o-9", customer="alice", total_cents=1, items=[])
    ctx = StepContext(
        saga_id="s-1",
        saga_name="place_order",
        step="reserve",
        attempt=1,
        data=data,
        results={},
        compensating=False,
        request_id="r",
        traceparent="00-" + "1" * 32 + "-" + "1" * 16 + "-01",
        started_at=0.0,
    )
    with pytest.raises(RetryableError, match="inventory unreachable: no instance"):
        await steps["reserve"].action(ctx)
