"""The shop's page tells the story of the pattern it runs, in Chromium: which pattern, what each
screen called (who answered, from which origin, bytes, time; behind the BFF, what it called),
the same screen in the other pattern, failures that name what failed, a call that hangs given up
on with a message, a cart with names, prices and a total, an account page with labels and the
strangler explained, the e-mails the shop sent, and a meter that counts the whole visit."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest
from shop_system import Shop

if TYPE_CHECKING:  # imported by pytest as a plugin (below); a plain import first would skip its rewrite
    from browser_helpers import Screenshots

pytestmark = pytest.mark.xdist_group("shop-browser")
pytest_plugins = ["browser_helpers"]  # the shop, the browser page, screenshots: once for all


def _calls(page: Any) -> list[str]:
    return [" ".join(t.split()) for t in page.get_by_test_id("screen-call").all_inner_texts()]


def test_the_panel_names_the_pattern_the_calls_and_links_the_other_pattern(
    browser_shop: Shop, page: Any, screenshots: Screenshots
) -> None:
    from playwright.sync_api import expect

    shop = browser_shop
    page.goto(shop.url("web") + "/")
    expect(page.get_by_test_id("product-POT-01")).to_be_visible()
    expect(page.get_by_test_id("story-pattern")).to_have_text("Pattern: Direct")
    expect(page.get_by_test_id("screen-call")).to_have_count(2)  # not signed in: no orders call
    calls = _calls(page)
    assert any(c.startswith("GET /categories catalog-") and " 200 " in c for c in calls), calls
    assert any(c.startswith("GET /products catalog-") for c in calls), calls
    # each call with who answered, its origin, status, bytes and time; the screen's sum below
    answered = re.compile(r"GET /\S+\s+catalog-\d\s+127\.0\.0\.1:\d+\s+200\s+[1-9][\d,]*\s+B\s+\d+\s+ms")
    for row in range(2):
        expect(page.get_by_test_id("screen-call").nth(row)).to_have_text(answered)
    total = re.compile(r"^2 calls to [12] origins?, [1-9][\d,]* bytes$")
    expect(page.get_by_test_id("story-total")).to_have_text(total)

    page.get_by_test_id("product-POT-01").get_by_role("link").click()
    expect(page.get_by_test_id("screen-call")).to_have_count(3)
    calls = _calls(page)
    for who, path in (("inventory", "/stock/POT-01"), ("legacy", "/reviews/POT-01")):
        assert any(c.startswith(f"GET {path} {who} 127.0.0.1:{shop.ports[who]}") for c in calls), calls
    # the meter counts the visit across screens, not only this one
    expect(page.get_by_test_id("visit-calls")).to_have_text("5")
    expect(page.locator("#calls")).to_have_text("3")

    other = page.get_by_test_id("other-pattern")
    assert other.get_attribute("href") == f"{shop.url('web-bff')}/#/product/POT-01"
    other.click()
    expect(page.get_by_test_id("mode")).to_have_text("via web BFF")
    expect(page.get_by_test_id("product-name")).to_have_text("Moka pot")
    expect(page.get_by_test_id("story-pattern")).to_have_text("Pattern: Backend for Frontend (web BFF)")
    expect(page.get_by_test_id("screen-call")).to_have_count(1)
    bff_port = shop.ports["web-bff"]
    assert _calls(page)[0].startswith(f"GET /api/products/POT-01 web-bff 127.0.0.1:{bff_port} 200")
    # what the BFF called for it, from the control room (the product's aggregate, not cached)
    page.goto(shop.url("web-bff") + "/#/")
    behind = page.get_by_test_id("behind")
    expect(behind).to_contain_text("catalog", timeout=10_000)
    assert page.get_by_test_id("other-pattern").get_attribute("href") == f"{shop.url('web')}/#/"
    screenshots.take(page, "shop-bff-home-story", full_page=True)


def test_the_cart_shows_names_prices_and_a_total(browser_shop: Shop, page: Any) -> None:
    from playwright.sync_api import expect

    page.goto(browser_shop.url("web-bff") + "/")
    page.get_by_test_id("add-POT-01").click()
    page.get_by_test_id("add-POT-01").click()
    page.get_by_test_id("add-BEA-02").click()
    page.get_by_test_id("cart-link").click()
    expect(page.get_by_test_id("cart-row-POT-01")).to_contain_text("Moka pot")
    row = " ".join(page.get_by_test_id("cart-row-POT-01").inner_text().split())
    assert row == "Moka pot POT-01 €34.00 2 €68.00", row
    expect(page.get_by_test_id("cart-row-BEA-02")).to_contain_text("Beans: Brazil")
    expect(page.get_by_test_id("cart-total")).to_have_text("€80.50")


def test_a_failed_call_names_what_failed_and_a_frozen_call_times_out(browser_shop: Shop, page: Any) -> None:
    from playwright.sync_api import expect

    shop = browser_shop
    # the inventory service unreachable from the browser (the Direct page calls it itself)
    inventory = f"http://127.0.0.1:{shop.ports['inventory']}"
    page.route(f"{inventory}/**", lambda route: route.abort("connectionrefused"))
    page.goto(shop.url("web") + "/#/product/POT-01")
    error = page.get_by_test_id("error")
    expect(error).to_contain_text(f"GET /stock/POT-01 (inventory at {inventory})")
    expect(error).to_contain_text("could not be reached")
    failed = [c for c in _calls(page) if "unreachable" in c]
    assert failed, _calls(page)
    assert failed[0].startswith("GET /stock/POT-01 inventory"), failed

    # a call that never answers: given up on after the page's timeout, with a message
    page.add_init_script("localStorage.setItem('shop.timeout_ms', '1500')")
    page.route("**/api/home", lambda route: None)  # held: never answered
    page.goto(shop.url("web-bff") + "/")
    expect(page.get_by_test_id("error")).to_have_text(
        "GET /api/home (web-bff) did not answer within 1.5 s; the page stopped waiting. "
        "Try again, or see the control room for what is slow.",
        timeout=10_000,
    )
    expect(page.get_by_test_id("view")).not_to_contain_text("Loading…")


def test_account_labels_the_strangler_and_the_e_mails_sent(
    browser_shop: Shop, page: Any, screenshots: Screenshots
) -> None:
    from playwright.sync_api import expect

    shop = browser_shop
    bff = shop.url("web-bff")
    token = shop.login("alice", base=bff, path="/api/oauth/token")
    placed = shop.http.post(
        bff + "/api/orders", headers=shop.bearer(token), json={"items": [{"sku": "GRD-01", "qty": 1}]}
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    shop.wait(
        lambda: shop.get("notifications", f"/emails?ref={order_id}", "alice").json(), 20, "the order's e-mail"
    )

    from browser_helpers import sign_in

    sign_in(page, bff, then="notifications")
    rows = page.get_by_test_id("email-row")
    expect(rows.filter(has_text=f"Your order {order_id} is confirmed")).to_have_count(1)
    link = rows.filter(has_text=order_id).get_by_role("link")
    expect(link).to_have_attribute("href", f"#/orders/{order_id}")

    page.goto(bff + "/#/account")
    account = page.get_by_test_id("account")
    expect(account).to_contain_text("Customer since")
    headers = account.locator("th").all_inner_texts()
    assert headers[:2] == ["User name", "Name"], headers
    assert not any("_" in h for h in headers), headers  # labels, not raw keys
    expect(page.get_by_test_id("served-by")).to_have_text("legacy")
    note = page.get_by_test_id("strangler-note")
    expect(note).to_contain_text("legacy monolith")
    expect(note).to_contain_text("strangler pattern")
    screenshots.take(page, "shop-account-strangler", full_page=True)
