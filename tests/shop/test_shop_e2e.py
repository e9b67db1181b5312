"""The shop end to end over real processes, started once for this module by ``edgeway demo``.

Each test drives the system as a client does and checks the effects where they land: in the
other services, on the bus, in the maildir.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from shop_system import Shop, running_shop

pytestmark = pytest.mark.xdist_group("shop-e2e")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory.mktemp("shop")) as system:
        yield system


def _stock(shop: Shop, sku: str) -> dict[str, Any]:
    response = shop.get("inventory", f"/stock/{sku}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def _order_until(shop: Shop, user: str, order_id: str, statuses: set[str]) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        order = shop.get("orders", f"/orders/{order_id}", user).json()
        return order if order["status"] in statuses else None

    return shop.wait(finished, 20, f"order {order_id} to reach {statuses}")


def _place(shop: Shop, user: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    response = shop.post("orders", "/orders", user, json={"items": items})
    assert response.status_code == 202, response.text
    order = dict(response.json())
    assert order["status"] == "pending"
    return order


# -- the Direct pattern: a customer's journey -------------------------------------------------------


def test_customer_logs_in_browses_orders_and_sees_it_confirmed(shop: Shop) -> None:
    products = shop.get("catalog-1", "/products", params={"category": "cups"}).json()
    assert {p["sku"] for p in products["items"]} == {"CUP-01", "CUP-02"}
    before = _stock(shop, "CUP-02")

    order = _place(shop, "alice", [{"sku": "CUP-02", "qty": 2}, {"sku": "BEA-02", "qty": 1}])
    assert order["total_cents"] == 2 * 1100 + 1250
    done = _order_until(shop, "alice", order["id"], {"confirmed", "cancelled"})

    assert done["status"] == "confirmed", done
    after = _stock(shop, "CUP-02")
    assert after["on_hand"] == before["on_hand"] - 2
    assert after["reserved"] == before["reserved"]
    saga = shop.get("orders", f"/orders/{order['id']}/saga", "alice").json()
    assert saga["status"] == "completed"
    assert [s["status"] for s in saga["steps"]] == ["done"] * 4
    # the confirmation e-mail went out, once
    mails = shop.wait(
        lambda: shop.get("notifications", "/emails", "alice", params={"ref": order["id"]}).json(),
        10,
        "e-mail",
    )
    assert [m["subject"] for m in mails] == [f"Your order {order['id']} is confirmed"]
    # another customer cannot see it
    assert shop.get("orders", f"/orders/{order['id']}", "bob").status_code == 404


def test_a_failing_payment_cancels_the_order_and_restores_the_stock(shop: Shop) -> None:
    before = _stock(shop, "KET-01")
    with shop.flag_on("payments.fail"):
        order = _place(shop, "bob", [{"sku": "KET-01", "qty": 3}])
        done = _order_until(shop, "bob", order["id"], {"confirmed", "cancelled"})

    assert done["status"] == "cancelled", done
    assert "declined" in (done["reason"] or "")
    assert _stock(shop, "KET-01") == before  # the reservation was released
    saga = shop.get("orders", f"/orders/{order['id']}/saga", "bob").json()
    assert saga["status"] == "compensated"
    steps = {s["name"]: s for s in saga["steps"]}
    assert "declined" in steps["charge"]["error"]
    assert steps["reserve"]["status"] == "compensated"
    assert steps["confirm"]["status"] == "pending"
    payment = shop.get("payments", f"/payments/{order['id']}", "bob").json()
    assert payment["status"] == "declined"
    mails = shop.wait(
        lambda: shop.get("notifications", "/emails", "bob", params={"ref": order["id"]}).json(), 10, "e-mail"
    )
    assert mails[0]["subject"] == f"Your order {order['id']} was cancelled"


def test_ordering_more_than_the_stock_cancels_without_charging(shop: Shop) -> None:
    order = _place(shop, "alice", [{"sku": "SCL-01", "qty": 5}])  # one scale in stock
    done = _order_until(shop, "alice", order["id"], {"confirmed", "cancelled"})
    assert done["status"] == "cancelled"
    assert "not enough stock" in done["reason"]
    assert shop.get("payments", f"/payments/{order['id']}", "alice").status_code == 404


def test_a_price_change_reaches_the_local_copies_and_prices_new_orders(shop: Shop) -> None:
    changed = shop.put("catalog-2", "/products/BEA-01/price", "ada", json={"price_cents": 1999})
    assert changed.status_code == 200, changed.text
    version = changed.json()["version"]

    for service in ("orders", "notifications"):
        copy = _copy_reaches(shop, service, "BEA-01", version)
        assert copy["price_cents"] == 1999
    # the other catalog instance serves it too (one database behind both)
    assert shop.get("catalog-1", "/products/BEA-01").json()["price_cents"] == 1999
    order = _place(shop, "alice", [{"sku": "BEA-01", "qty": 1}])
    assert order["total_cents"] == 1999


def _copy_reaches(shop: Shop, service: str, sku: str, version: int) -> dict[str, Any]:
    def arrived() -> dict[str, Any] | None:
        row = dict(shop.get(service, f"/catalog-copy/{sku}").json())
        return row if row.get("version") == version else None

    try:
        return shop.wait(arrived, 10, f"{service}'s copy of {sku} at version {version}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{shop.consumers('catalog')}") from None


def test_only_admins_change_prices(shop: Shop) -> None:
    response = shop.put("catalog-1", "/products/CUP-01/price", "alice", json={"price_cents": 1})
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert shop.put("catalog-1", "/products/CUP-01/price", json={"price_cents": 1}).status_code == 401


def test_the_bulk_email_job_reports_progress_over_the_bus_and_completes(shop: Shop) -> None:
    seen = asyncio.run(_job_with_progress(shop, count=6))
    job_id, progress = seen
    assert progress[0] == ("queued", 0)
    assert progress[-1] == ("completed", 6)
    assert [done for _, done in progress] == sorted(done for _, done in progress)
    assert {done for _, done in progress} == set(range(7))
    job = shop.get("notifications", f"/jobs/{job_id}", "alice").json()
    assert (job["status"], job["done"], job["total"]) == ("completed", 6, 6)
    mails = list((shop.data_dir / "maildir" / "new").glob(f"job-{job_id}-*"))
    assert len(mails) == 6
    assert shop.get("notifications", f"/jobs/{job_id}", "bob").status_code == 404


async def _job_with_progress(shop: Shop, count: int) -> tuple[str, list[tuple[str, int]]]:
    import nats

    nc = await nats.connect(f"nats://127.0.0.1:{shop.ports['nats']}")
    events: list[dict[str, Any]] = []
    finished = asyncio.Event()

    async def on_message(msg: Any) -> None:
        event = json.loads(msg.data)
        events.append(event)
        if event["status"] == "completed" and event["job_id"] == job_id:
            finished.set()

    job_id = ""
    sub = await nc.subscribe("shop.jobs.e.>", cb=on_message)
    try:
        response = await asyncio.to_thread(
            shop.post, "notifications", "/jobs/emails", "alice", json={"count": count, "subject": "test"}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        assert response.json()["topic"] == f"jobs/{job_id}"
        await asyncio.wait_for(finished.wait(), 20)
    finally:
        await sub.unsubscribe()
        await nc.close()
    return job_id, [(e["status"], e["done"]) for e in events if e["job_id"] == job_id]


def test_a_revoked_token_stops_working_at_every_service(shop: Shop) -> None:
    token = shop.login("bob", fresh=True)
    assert shop.get("orders", "/orders", headers=shop.bearer(token)).status_code == 200
    assert shop.get("profile", "/profile/me", headers=shop.bearer(token)).status_code == 200

    revoked = shop.http.post(shop.url("security") + "/oauth/revoke", data={"token": token})
    assert revoked.status_code == 200

    for service, path in (("orders", "/orders"), ("profile", "/profile/me"), ("notifications", "/emails")):

        def refuses(service: str = service, path: str = path) -> bool:
            return shop.get(service, path, headers=shop.bearer(token)).status_code == 401

        shop.wait(refuses, 5, f"{service} to refuse the revoked token")
    # a new login works
    assert (
        shop.get("orders", "/orders", headers=shop.bearer(shop.login("bob", fresh=True))).status_code == 200
    )


def test_user_changes_in_the_security_service_reach_the_profile_copy(shop: Shop) -> None:
    created = shop.post(
        "security",
        "/admin/users",
        "ada",
        json={
            "username": "carol",
            "password": "carol-pass",
            "roles": ["customer"],
            "attributes": {"email": "carol@shop.example", "display_name": "Carol"},
        },
    )
    assert created.status_code == 201, created.text
    try:
        user = shop.wait(
            lambda: shop.get("profile", "/users/carol", "sam").json().get("email"), 10, "carol's copy"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{shop.consumers('users')}") from None
    assert user == "carol@shop.example"

    patched = shop.http.patch(
        shop.url("security") + "/admin/users/carol", headers=shop.as_user("ada"), json={"roles": ["support"]}
    )
    assert patched.status_code == 200, patched.text
    shop.wait(
        lambda: shop.get("profile", "/users/carol", "sam").json()["roles"] == ["support"], 10, "new roles"
    )
    assert shop.get("profile", "/users", "alice").status_code == 403


def test_direct_services_answer_cors_for_the_web_app_only(shop: Shop) -> None:
    web = shop.url("web")
    allowed = shop.http.options(
        shop.url("orders") + "/orders",
        headers={
            "Origin": web,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == web
    other = shop.http.options(
        shop.url("orders") + "/orders",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
    simple = shop.get("catalog-1", "/products", headers={"Origin": web})
    assert simple.headers["access-control-allow-origin"] == web


def test_the_web_app_is_configured_for_the_direct_pattern(shop: Shop) -> None:
    config = shop.http.get(shop.url("web") + "/config.js").text
    assert '"mode":"direct"' in config
    assert shop.url("catalog-2") in config
    assert "<html" in shop.http.get(shop.url("web") + "/").text.lower()


def test_a_crashed_service_is_restarted_and_serves_again(shop: Shop) -> None:
    pid = shop.pid_of("inventory")
    os.kill(pid, signal.SIGKILL)
    shop.wait(lambda: "inventory exited with code -9; restarting" in shop.output(), 10, "the restart notice")
    shop.wait(lambda: "inventory is ready again (restart #1)" in shop.output(), 30, "inventory to be back")
    assert shop.pid_of("inventory") != pid
    assert shop.get("inventory", "/stock/CUP-01").status_code == 200
    # The edges take it back once their health checks pass again (2 s apart) and its breaker has
    # closed; until then they answer 503, and the next tests reach inventory through them.
    token = shop.partner_token()
    shop.wait(
        lambda: shop.get("gateway", "/v1/stock/CUP-01", headers=shop.bearer(token)).status_code == 200,
        20,
        "the gateway to route to the restarted inventory",
    )
    # the order flow works through the restarted service
    order = _place(shop, "alice", [{"sku": "CUP-01", "qty": 1}])
    assert _order_until(shop, "alice", order["id"], {"confirmed", "cancelled"})["status"] == "confirmed"


def test_logs_are_merged_with_a_prefix_per_process_and_carry_the_request_id(shop: Shop) -> None:
    response = shop.get("catalog-1", "/products/CUP-01", headers={"X-Request-ID": "trace-me-0123456789"})
    assert response.headers["x-request-id"] == "trace-me-0123456789"
    line = shop.wait(
        lambda: next((x for x in shop.output().splitlines() if "GET /products/CUP-01 200" in x), None),
        5,
        "access line",
    )
    assert line.startswith("catalog-1")
    assert "req=trace-me" in line


# -- the API gateway for partners -------------------------------------------------------------------


def test_a_partner_reads_the_catalog_through_the_gateway_balanced_over_both_instances(shop: Shop) -> None:
    token = shop.partner_token(base=shop.url("gateway"))  # the token endpoint is behind the gateway too
    served_by = set()
    # least_outstanding picks the less loaded of two random instances: one request at a time ties
    # at 0, so the choice is a coin toss; 12 tosses all one way is 1 in 2,048, 6 was 1 in 32.
    for _ in range(12):
        response = shop.get("gateway", "/v1/products/POT-01", headers=shop.bearer(token))
        assert response.status_code == 200, response.text
        assert response.json()["sku"] == "POT-01"
        served_by.add(response.headers["x-served-by"])
        if len(served_by) == 2:
            break
    assert served_by == {"catalog-1", "catalog-2"}
    assert int(response.headers["ratelimit-limit"]) > 0
    stock = shop.get("gateway", "/v1/stock/POT-01", headers=shop.bearer(token))
    assert stock.status_code == 200
    assert stock.json()["sku"] == "POT-01"
    reviews = shop.get("gateway", "/v1/reviews/POT-01", headers=shop.bearer(token)).json()
    assert reviews["count"] >= 1


def test_the_gateway_refuses_customers_and_anonymous_callers_before_any_service(shop: Shop) -> None:
    anonymous = shop.get("gateway", "/v1/products")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    customer = shop.get("gateway", "/v1/products", "alice")
    assert customer.status_code == 403
    assert customer.json()["reason"] == "insufficient_role"
    # what is not routed does not exist here: internal services stay internal
    token = shop.partner_token()
    for path in ("/payments/x", "/orders", "/v1/orders", "/admin/users"):
        assert shop.get("gateway", path, headers=shop.bearer(token)).status_code in (401, 404), path


def test_a_partner_is_rate_limited_and_told_when_to_come_back(shop: Shop) -> None:
    headers = shop.bearer(shop.partner_token())
    url = shop.url("gateway") + "/v1/reviews/CUP-01"
    limit = int(shop.http.get(url, headers=headers).headers["ratelimit-limit"])

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=20) as client:
            return await asyncio.gather(*(client.get(url, headers=headers) for _ in range(limit * 2)))

    started = time.monotonic()
    responses = asyncio.run(burst())
    refill = 20 * (time.monotonic() - started)  # the bucket gains 20 tokens a second meanwhile
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) <= limit + refill + 1  # never more than the bucket held
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"].startswith("application/problem+json")
    shop.wait(lambda: shop.http.get(url, headers=headers).status_code == 200, 10, "the bucket to refill")


def test_a_revoked_partner_token_stops_working_at_the_gateway(shop: Shop) -> None:
    token = shop.partner_token()
    assert shop.get("gateway", "/v1/products", headers=shop.bearer(token)).status_code == 200
    shop.http.post(shop.url("security") + "/oauth/revoke", data={"token": token})
    shop.wait(
        lambda: (
            shop.get("gateway", "/v1/products", headers=shop.bearer(token)).json().get("reason") == "revoked"
        ),
        5,
        "the gateway to refuse the revoked token",
    )


# -- the web BFF ---------------------------------------------------------------------------------------


def test_the_web_bff_serves_the_app_logs_in_and_places_an_order(shop: Shop) -> None:
    bff = shop.url("web-bff")
    config = shop.http.get(bff + "/config.js").text
    assert '"mode":"bff"' in config
    token = shop.login("alice", base=bff, path="/api/oauth/token")
    headers = shop.bearer(token)
    placed = shop.http.post(
        bff + "/api/orders", headers=headers, json={"items": [{"sku": "BEA-02", "qty": 1}]}
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    done = shop.wait(
        lambda: (
            (o := shop.http.get(f"{bff}/api/orders/{order_id}", headers=headers).json())["status"]
            in ("confirmed", "cancelled")
            and o
        ),
        20,
        "the order through the BFF",
    )
    assert done["status"] == "confirmed"
    assert shop.http.get(f"{bff}/api/orders/{order_id}").status_code == 401


def test_the_web_bff_validates_an_order_at_the_edge(shop: Shop) -> None:
    bff = shop.url("web-bff")
    headers = shop.as_user("bob")
    before = shop.output().count("POST /orders ")
    bad = shop.http.post(
        bff + "/api/orders", headers=headers, json={"items": [{"sku": "x", "qty": 0}], "coupon": 1}
    )
    assert bad.status_code == 422
    paths = {e["path"] for e in bad.json()["errors"]}
    assert {"/items/0/qty", "/items/0/sku", ""} <= paths
    empty = shop.http.post(bff + "/api/orders", headers=headers, json={"items": []})
    assert empty.status_code == 422
    time.sleep(0.5)
    assert shop.output().count("POST /orders ") == before  # nothing reached the orders service


# -- live updates through the web BFF -------------------------------------------------------------------


async def _live(
    shop: Shop, user: str, topics: list[str], until: str, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Messages pushed on the BFF's WebSocket for ``topics`` until one has status ``until``."""
    import websockets

    token = await asyncio.to_thread(shop.login, user)
    url = f"ws://127.0.0.1:{shop.ports['web-bff']}/api/live?access_token={token}"
    received: list[dict[str, Any]] = []
    async with websockets.connect(url) as socket:
        for topic in topics:
            await socket.send(json.dumps({"type": "subscribe", "topic": topic, "replay": True}))
        async with asyncio.timeout(timeout):
            async for raw in socket:
                message = json.loads(raw)
                received.append(message)
                if message["type"] == "message" and message["data"].get("status") == until:
                    break
    return received


def test_an_order_s_status_is_pushed_live_over_the_bff_websocket(shop: Shop) -> None:
    bff = shop.url("web-bff")
    placed = shop.http.post(
        bff + "/api/orders", headers=shop.as_user("alice"), json={"items": [{"sku": "CUP-01", "qty": 1}]}
    )
    assert placed.status_code == 202
    topic = f"orders/{placed.json()['id']}"
    messages = asyncio.run(_live(shop, "alice", [topic], until="confirmed"))
    assert messages[0] == {"type": "subscribed", "topic": topic}
    statuses = [m["data"]["status"] for m in messages if m["type"] == "message"]
    assert statuses[-1] == "confirmed"
    assert statuses == [s for s in ("pending", "reserved", "paid", "confirmed") if s in statuses]


def test_the_email_job_s_progress_is_pushed_to_its_owner_only(shop: Shop) -> None:
    import websockets

    bff = shop.url("web-bff")
    started = shop.http.post(bff + "/api/jobs/emails", headers=shop.as_user("alice"), json={"count": 5})
    assert started.status_code == 202, started.text
    job = started.json()

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async def bob_listens() -> list[dict[str, Any]]:
            token = await asyncio.to_thread(shop.login, "bob")
            url = f"ws://127.0.0.1:{shop.ports['web-bff']}/api/live?access_token={token}"
            got: list[dict[str, Any]] = []
            async with websockets.connect(url) as socket:
                await socket.send(json.dumps({"type": "subscribe", "topic": job["topic"], "replay": True}))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(4):
                        async for raw in socket:
                            got.append(json.loads(raw))
            return got

        return await asyncio.gather(_live(shop, "alice", [job["topic"]], until="completed"), bob_listens())

    alice, bob = asyncio.run(both())
    progress = [m["data"]["done"] for m in alice if m["type"] == "message"]
    assert progress[-1] == 5
    assert progress == sorted(progress)
    # bob may subscribe to the topic name, but alice's job never reaches him
    assert [m["type"] for m in bob] == ["subscribed"]


def test_the_live_channel_needs_a_token(shop: Shop) -> None:
    response = shop.http.get(shop.url("web-bff") + "/api/live", headers={"Accept": "text/event-stream"})
    assert response.status_code == 401


# -- strangling the legacy monolith ----------------------------------------------------------------------


def test_the_strangler_flag_moves_a_route_to_the_new_service_in_steps_without_a_restart(shop: Shop) -> None:
    web, mobile = shop.url("web-bff") + "/api/account/profile", shop.url("mobile-bff") + "/m/account/profile"
    headers = shop.as_user("alice")
    admin = {edge: shop.url(f"{edge}-admin") + "/healthz" for edge in ("web-bff", "mobile-bff")}
    before = {edge: shop.http.get(url).json() for edge, url in admin.items()}
    assert shop.http.get(web, headers=headers).json()["served_by"] == "legacy"

    statuses: list[int] = []
    served: list[str] = []
    stop = threading.Event()

    def keep_calling() -> None:  # a client using the page all along: the traffic the edge judges
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                response = client.get(web, headers=headers)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    served.append(response.json()["served_by"])

    def all_from(url: str, side: str, n: int = 20) -> bool:
        return all(shop.http.get(url, headers=headers).json()["served_by"] == side for _ in range(n))

    def on(url: str, side: str) -> Callable[[], bool]:
        return lambda: all_from(url, side)

    caller = threading.Thread(target=keep_calling)
    caller.start()
    try:
        shop.flag("strangler.account-profile", True)
        # 10 % → 50 % → 100 %, 10 s a step: the web BFF decides, the mobile BFF follows (shared state)
        for url in (web, mobile):
            shop.wait(on(url, "profile"), 90, f"{url} moved to the profile service")
        moved = shop.http.get(web, headers=headers).json()
        assert (moved["username"], moved["email"]) == ("alice", "alice@shop.example")
        shop.flag("strangler.account-profile", False)  # rolled back: at once, both edges
        for url in (web, mobile):
            shop.wait(on(url, "legacy"), 15, f"{url} back on the legacy monolith")
    finally:
        shop.flag("strangler.account-profile", False)
        stop.set()
        caller.join()

    assert statuses
    assert set(statuses) == {200}, f"{len([s for s in statuses if s != 200])} failed of {len(statuses)}"
    # in steps: the page was served by both while the route moved
    assert {"legacy", "profile"} <= set(served)
    for edge, url in admin.items():
        after = shop.http.get(url).json()
        assert after["pid"] == before[edge]["pid"]  # the same process, and no reload: the edge moves it
        assert after["config_generation"] == before[edge]["config_generation"]


def test_the_mobile_bff_streams_an_order_s_status_as_server_sent_events(shop: Shop) -> None:
    mobile = shop.url("mobile-bff")
    headers = shop.as_user("bob")
    placed = shop.http.post(
        mobile + "/m/orders", headers=headers, json={"items": [{"sku": "BEA-02", "qty": 1}]}
    )
    assert placed.status_code == 202, placed.text
    topic = f"orders/{placed.json()['id']}"
    statuses: list[str] = []
    with shop.http.stream(
        "GET",
        f"{mobile}/m/live",
        params={"topic": topic, "replay": "1"},
        headers={**headers, "Accept": "text/event-stream"},
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                statuses.append(json.loads(line[5:])["status"])
                if statuses[-1] in ("confirmed", "cancelled"):
                    break
    assert statuses[-1] == "confirmed"


# -- composed screens --------------------------------------------------------------------------------


def test_the_bff_home_screen_is_one_call_with_the_customer_s_orders_only_when_signed_in(shop: Shop) -> None:
    bff = shop.url("web-bff")
    anonymous = shop.http.get(bff + "/api/home").json()
    assert anonymous["orders"] == []
    assert {c["name"] for c in anonymous["categories"]} >= {"cups", "beans"}
    assert len(anonymous["products"]) == 10
    mine = shop.http.get(bff + "/api/home", headers=shop.as_user("alice")).json()
    assert mine["orders"]
    assert all(set(o) == {"id", "status", "total_cents", "created_at"} for o in mine["orders"])
    assert mine["orders"][0]["id"] in {o["id"] for o in shop.get("orders", "/orders", "alice").json()}


def test_the_product_page_is_one_call_at_the_web_bff_and_a_smaller_one_at_the_mobile_bff(shop: Shop) -> None:
    web = shop.http.get(shop.url("web-bff") + "/api/products/GRD-01")
    mobile = shop.http.get(shop.url("mobile-bff") + "/m/products/GRD-01", headers=shop.as_user("bob"))
    assert web.status_code == mobile.status_code == 200
    page = web.json()
    assert page["sku"] == "GRD-01"
    assert page["stock"]["available"] == _stock(shop, "GRD-01")["available"]
    assert page["reviews"]["count"] >= 1
    assert "_meta" not in page
    card = mobile.json()
    assert set(card) == {"sku", "name", "price", "in_stock", "rating"}
    assert card["price"] == page["price_cents"]
    assert len(mobile.content) * 3 < len(web.content)  # the phone gets a fraction of the bytes


def test_a_partner_gets_the_whole_product_in_one_call(shop: Shop) -> None:
    response = shop.get("gateway", "/v1/products/CUP-01/full", headers=shop.bearer(shop.partner_token()))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"sku", "name", "description", "category", "price_cents", "stock", "rating"}
    assert body["rating"]["count"] >= 1


def test_smoke_load_through_every_edge_without_an_error(shop: Shop) -> None:
    """The same screens through Direct, the gateway and both BFFs: every request succeeds."""
    from edgeway.demo.cli import PARTNER
    from edgeway.demo.compare import login, measure, screens

    urls = {name: shop.url(name) for name in shop.ports}
    tokens = asyncio.run(login(urls["security"], "alice", "alice-pass", PARTNER))
    screen_list = screens(urls, ["gateway", "web-bff", "mobile-bff"])
    results = asyncio.run(measure(screen_list, tokens, loads=15, concurrency=3))
    summaries = {(r.edge, r.name): r.summary() for r in results}
    assert {edge for edge, _ in summaries} == {"direct", "gateway", "web-bff", "mobile-bff"}
    failed = {key: s["first_error"] for key, s in summaries.items() if s["errors"]}
    assert not failed, failed
    assert all(s["loads"] == 15 for s in summaries.values())
    # what the patterns cost the client, per screen
    assert summaries[("direct", "product")]["calls_per_screen"] == 3
    assert summaries[("web-bff", "product")]["calls_per_screen"] == 1
    assert (
        summaries[("mobile-bff", "product")]["bytes_per_screen"]
        < summaries[("web-bff", "product")]["bytes_per_screen"]
    )


def test_a_catalog_instance_killed_under_load_costs_the_partner_nothing(shop: Shop) -> None:
    headers = shop.bearer(shop.partner_token())
    url = shop.url("gateway") + "/v1/products/POT-01"
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def partner() -> None:  # ~10 requests a second, under the partner's rate limit
        with httpx.Client(timeout=15) as client:
            while not stop.is_set():
                response = client.get(url, headers=headers)
                outcomes.append((response.status_code, response.headers.get("x-served-by", "")))
                time.sleep(0.1)

    caller = threading.Thread(target=partner)
    caller.start()
    try:
        shop.wait(lambda: len(outcomes) >= 5, 10, "traffic")
        os.kill(shop.pid_of("catalog-1"), signal.SIGKILL)
        restarts = shop.output().count("catalog-1 is ready again")
        shop.wait(
            lambda: shop.output().count("catalog-1 is ready again") > restarts, 30, "catalog-1 to be back"
        )
        shop.wait(lambda: outcomes[-1][1] == "catalog-1", 20, "catalog-1 to take traffic again")
    finally:
        stop.set()
        caller.join()
    failed = [status for status, _ in outcomes if status != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:10]}"
    assert {"catalog-1", "catalog-2"} <= {served for _, served in outcomes}
