"""The web app in a real browser (Debian's Chromium, headless, driven by Playwright).

One shop for the module; each test signs in, fills the cart, checks out and watches the order's
status change on the page without reloading it: by polling in the Direct pattern, pushed over
the BFF's WebSocket through the web BFF.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from shop_browser import sign_in_and_check_out
from shop_system import Shop, running_shop

from conftest import require

pytestmark = pytest.mark.xdist_group("shop-browser")

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    require("chromium")
    with running_shop(tmp_path_factory.mktemp("shop-browser")) as system:
        yield system


@pytest.fixture
def page(shop: Shop) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context()
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert not errors, f"JavaScript errors on the page: {errors}"


def test_direct_pattern_sign_in_add_to_cart_check_out_and_watch_the_order(shop: Shop, page: Any) -> None:
    order_id = sign_in_and_check_out(page, shop, shop.url("web"), "Direct")
    order = shop.get("orders", f"/orders/{order_id}", "alice").json()
    assert order["status"] == "confirmed"
    assert {i["sku"] for i in order["items"]} == {"POT-01", "BEA-02"}


def test_bff_pattern_sign_in_check_out_and_watch_order_and_emails_pushed_live(shop: Shop, page: Any) -> None:
    from playwright.sync_api import expect

    base = shop.url("web-bff")
    order_id = sign_in_and_check_out(page, shop, base, "via web BFF")
    # the status arrived over the BFF's WebSocket, not by polling
    expect(page.get_by_test_id("live")).to_have_text("live: connected")
    timeline = page.get_by_test_id("timeline").inner_text()
    assert "confirmed" in timeline
    polls = [line for line in shop.output().splitlines() if f"GET /orders/{order_id} " in line]
    assert len(polls) <= 2, polls  # the page loaded the order once; no polling

    page.goto(base + "/#/emails")
    page.get_by_test_id("email-count").fill("4")
    page.get_by_test_id("send-emails").click()
    expect(page.get_by_test_id("job-state")).to_have_text("completed", timeout=20_000)
    expect(page.get_by_test_id("job-done")).to_have_text("4")

    page.goto(base + "/#/account")
    expect(page.get_by_test_id("served-by")).to_have_text("legacy")
