"""The web app in a real browser (Debian's Chromium, headless, driven by Playwright).

One shop for every browser test (``browser_shop``, tests/shop/browser_helpers.py); each test
here signs in, fills the cart, checks out and watches the order's status change on the page
without reloading it: by polling in the Direct pattern, pushed over the BFF's WebSocket through
the web BFF.
"""

from __future__ import annotations

from typing import Any

import pytest
from shop_browser import sign_in_and_check_out
from shop_system import Shop

pytestmark = pytest.mark.xdist_group("shop-browser")
pytest_plugins = ["browser_helpers"]  # the shop, the browser page, screenshots: once for all


@pytest.fixture
def shop(browser_shop: Shop) -> Shop:
    """The browser tests' shop (tests/shop/browser_helpers.py), started once for all of them."""
    return browser_shop


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
    # opened after the checkout; on a loaded CI machine it took over 5 s (the page's initial
    # "live: off" was still there), as in the HTTPS variant
    expect(page.get_by_test_id("live")).to_have_text("live: connected", timeout=15_000)
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
