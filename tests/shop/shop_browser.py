"""What the browser tests do in the web app (Playwright), shared by the plain and the HTTPS shop."""

from __future__ import annotations

from typing import Any

from shop_system import Shop


def sign_in_and_check_out(page: Any, shop: Shop, base: str, expect_mode: str) -> str:
    from playwright.sync_api import expect

    page.goto(base + "/")
    expect(page.get_by_test_id("mode")).to_have_text(expect_mode)
    expect(page.get_by_test_id("product-POT-01")).to_be_visible()
    page.get_by_test_id("add-POT-01").click()
    page.get_by_test_id("add-BEA-02").click()
    expect(page.locator("#cart-count")).to_have_text("2")
    page.get_by_test_id("cart-link").click()
    page.get_by_test_id("checkout").click()
    # not signed in yet: the page asks, then comes back to the cart
    page.get_by_test_id("username").fill("alice")
    page.get_by_test_id("password").fill("alice-pass")
    page.get_by_test_id("sign-in").click()
    expect(page.get_by_test_id("user")).to_have_text("signed in as alice")
    page.get_by_test_id("checkout").click()
    expect(page.get_by_test_id("order-id")).to_be_visible()
    order_id = str(page.get_by_test_id("order-id").inner_text())
    # the status moves on without a reload; the timeline shows the steps it saw
    try:
        expect(page.get_by_test_id("order-status")).to_have_text("confirmed", timeout=20_000)
    except AssertionError as exc:
        # The page shows only the status; the order's reason and the services' log say why.
        order = shop.get("orders", f"/orders/{order_id}", "alice").json()
        tail = "\n".join(shop.output().splitlines()[-60:])
        raise AssertionError(f"{exc}\norder: {order}\nlast lines of the shop's log:\n{tail}") from None
    return order_id
