"""The control room of a running ``edgeway demo``, in Chromium: the topology with the calls a
checkout made, the checkout's trace as a waterfall, a flag switched from the page (read back from
NATS KV), and the patterns measured through the delay proxies, as charts and numbers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from shop_system import Shop

from edgeway.demo.plan import CONFIG_BUCKET

if TYPE_CHECKING:  # imported by pytest as a plugin (below); a plain import first would skip its rewrite
    from browser_helpers import Screenshots

T = TypeVar("T")

pytestmark = pytest.mark.xdist_group("shop-browser")
pytest_plugins = ["browser_helpers"]  # the shop, the browser page, screenshots: once for all


def _off_the_loop(work: Callable[[], T]) -> T:
    """Run ``work`` (which calls asyncio.run) in a thread: Playwright's sync API keeps an event
    loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result(timeout=30)


def _set_flag(shop: Shop, name: str, value: Any) -> None:
    _off_the_loop(lambda: shop.flag(name, value))


def _flag_in_kv(shop: Shop, name: str) -> Any:
    async def read() -> Any:
        import nats

        nc = await nats.connect(f"nats://127.0.0.1:{shop.ports['nats']}")
        try:
            kv = await nc.jetstream().key_value(CONFIG_BUCKET)
            return json.loads((await kv.get(f"flags.{name}")).value or b"null")
        finally:
            await nc.close()

    return _off_the_loop(lambda: asyncio.run(read()))


def _check_out_through_the_web_bff(shop: Shop) -> str:
    bff = shop.url("web-bff")
    token = shop.login("bob", base=bff, path="/api/oauth/token")
    placed = shop.http.post(
        bff + "/api/orders", headers=shop.bearer(token), json={"items": [{"sku": "CUP-01", "qty": 1}]}
    )
    assert placed.status_code == 202, placed.text
    return str(placed.json()["id"])


def test_the_topology_and_the_waterfall_of_a_checkout(
    browser_shop: Shop, page: Any, screenshots: Screenshots
) -> None:
    from playwright.sync_api import expect

    shop = browser_shop
    page.goto(shop.url("control") + "/")
    expect(page.get_by_test_id("pattern")).to_have_text("pattern: all")
    nodes = ("browser", "mobile app", "web-bff", "gateway", "catalog", "orders", "legacy", "broker")
    for node in nodes:
        expect(page.get_by_test_id(f"node-{node}")).to_be_visible()
    expect(page.get_by_test_id("process-orders")).to_contain_text("ready")
    # what each edge's breaker and balancer think of an instance, read from the edge's /metrics
    # (every edge in front of the catalog: the gateway and both BFFs), by process name
    catalog = page.get_by_test_id("breaker-catalog-1")
    expect(catalog).to_have_text(re.compile(r"^catalog\s*catalog-1(\s*closed){3}\s*$"), timeout=10_000)
    expect(catalog).not_to_contain_text("out of the balancer")

    order_id = _check_out_through_the_web_bff(shop)
    # the call flows: the browser reached the BFF, which called the orders service
    expect(page.get_by_test_id("link-browser-web-bff")).to_be_attached(timeout=10_000)
    expect(page.get_by_test_id("link-web-bff-orders")).to_be_attached(timeout=10_000)
    expect(page.get_by_test_id("stats-web-bff")).to_be_visible()

    row = page.get_by_test_id("trace-row").filter(has_text="web-bff: POST /api/orders").first
    expect(row).to_be_visible(timeout=10_000)
    row.click()
    waterfall = page.get_by_test_id("waterfall")
    expect(waterfall.locator("[data-node=web-bff]").first).to_be_visible()
    # the orders service's own span (exported over OTLP), inside the BFF's request
    orders_row = waterfall.locator("[data-node=orders]").filter(has_text="POST /orders").first
    expect(orders_row).to_be_visible(timeout=10_000)
    assert waterfall.get_by_test_id("span-bar").count() >= 2
    trace_id = page.get_by_test_id("trace-id").inner_text()
    found = shop.http.get(f"{shop.url('control')}/api/traces/{trace_id}").json()
    assert {"web-bff", "orders"} <= {s["node"] for s in found["spans"]}
    assert any(s["node"] == "orders" and s["source"] == "span" and s["depth"] >= 1 for s in found["spans"])
    assert shop.get("orders", f"/orders/{order_id}", "bob").status_code == 200

    screenshots.take(page.locator("#topology-panel"), "control-room-topology")
    screenshots.take(page.locator("#traces-panel"), "control-room-trace")
    screenshots.take(page, "control-room", full_page=True)


def test_a_flag_switch_on_the_page_switches_the_flag(browser_shop: Shop, page: Any) -> None:
    from playwright.sync_api import expect

    shop = browser_shop
    page.goto(shop.url("control") + "/")
    switch = page.get_by_test_id("flag-payments.fail")
    expect(switch).not_to_be_checked()
    try:
        switch.locator("xpath=..").click()  # the visible slider over the checkbox
        expect(switch).to_be_checked()
        shop.wait(lambda: _flag_in_kv(shop, "payments.fail") is True, 10, "the flag in NATS KV")
        switch.locator("xpath=..").click()
        shop.wait(lambda: _flag_in_kv(shop, "payments.fail") is False, 10, "the flag off again")
        expect(switch).not_to_be_checked()
        # set elsewhere (edgeway demo flag), the page follows
        _set_flag(shop, "payments.fail", True)
        expect(switch).to_be_checked(timeout=10_000)
    finally:
        _set_flag(shop, "payments.fail", False)
    expect(switch).not_to_be_checked(timeout=10_000)
    time.sleep(0.5)  # as Shop.flag_on: the services' KV watches deliver it before the next checkout


def test_the_patterns_side_by_side_at_a_chosen_round_trip(
    browser_shop: Shop, page: Any, screenshots: Screenshots
) -> None:
    from playwright.sync_api import expect

    shop = browser_shop
    page.goto(shop.url("control") + "/")
    expect(page.get_by_test_id("exposed-direct")).to_have_text("9")
    expect(page.get_by_test_id("exposed-gateway")).to_have_text("1")
    expect(page.get_by_test_id("exposed-bff")).to_have_text("2")
    page.get_by_test_id("rtt").select_option("40")
    page.get_by_test_id("loads").fill("2")
    page.get_by_test_id("measure").click()
    expect(page.get_by_test_id("patterns-status")).to_contain_text("measured at 40 ms", timeout=90_000)

    rows = page.get_by_test_id("patterns-row")
    expect(rows).to_have_count(7)
    table = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td").all_inner_texts()
        table[(cells[0], cells[1])] = cells
    assert table[("Direct", "home")][2] == "3"
    assert table[("web BFF", "home")][2] == "1"
    assert table[("mobile BFF", "product")][2] == "1"
    for (pattern, screen), cells in table.items():
        assert cells[6].startswith("0"), (pattern, screen, cells)  # no errors
        # every screen waited at least the emulated round trip (a sleep: never less)
        assert float(cells[4].replace(",", "")) >= 40, (pattern, screen, cells)

    def size(pattern: str) -> int:
        return int(table[(pattern, "home")][3].replace(",", ""))

    assert size("mobile BFF") < size("web BFF")  # the phone's home screen is cut to what it shows

    chart = page.get_by_test_id("patterns-chart")
    for name in ("chart-latency", "chart-bytes", "chart-calls"):
        values = chart.get_by_test_id(f"{name}-value").all_text_contents()  # SVG: no innerText
        assert len(values) == 7, (name, values)
        assert all(re.fullmatch(r"[\d,]+", v) for v in values), values
    screenshots.take(page.locator("#patterns-panel"), "control-room-patterns")
