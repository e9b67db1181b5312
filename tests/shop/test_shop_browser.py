"""The web app in a real browser (Debian's Chromium, headless, driven by Playwright).

One shop for every browser test (``browser_shop``, tests/shop/browser_helpers.py); each test
here signs in, fills the cart, checks out and watches the order's status change on the page
without reloading it: by polling in the Direct pattern, pushed over the BFF's WebSocket through
the web BFF.
"""

from __future__ import annotations

import re
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
    # the status arrived over the BFF's WebSocket, not by polling (the socket opened at sign-in)
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


def test_the_live_connection_opens_at_sign_in_not_after_a_screen_loads(shop: Shop, page: Any) -> None:
    """The page's one WebSocket opens when someone signs in, whatever the screen, and serves the
    whole visit. It used to be opened by the order screen after its GET, and only for an order
    still under way: an order settled by then (a loaded machine, the saga faster than the page)
    left "live: off" for good, which a CI run saw as the indicator "taking over 5 s"."""
    from browser_helpers import sign_in  # a plugin here (pytest_plugins): imported once it is loaded
    from playwright.sync_api import expect

    base = shop.url("web-bff")
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    sign_in(page, base, then="account")  # a screen that watches nothing
    expect(page.get_by_test_id("served-by")).to_be_visible()
    expect(page.get_by_test_id("live")).to_have_text("live: connected")

    placed = shop.post("orders", "/orders", "alice", json={"items": [{"sku": "BEA-02", "qty": 1}]})
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["id"]
    shop.wait(
        lambda: shop.get("orders", f"/orders/{order_id}", "alice").json()["status"] == "confirmed" or None,
        20,
        f"order {order_id} to be confirmed",
    )
    page.goto(f"{base}/#/orders/{order_id}")  # settled before its screen asked: nothing to watch
    expect(page.get_by_test_id("order-status")).to_have_text("confirmed")
    expect(page.get_by_test_id("live")).to_have_text("live: connected")
    assert len(sockets) == 1, sockets  # one socket for the visit, not one per screen

    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("live")).to_have_text("live: off")


def test_a_lost_live_connection_is_opened_again_and_resubscribed(shop: Shop, page: Any) -> None:
    """A connection that drops (here closed with 1001, as a BFF shutting down does) is opened
    again at once and subscribes again to what the screen watches: the e-mail job's progress
    keeps coming. Before, the page stayed "live: off" and the job's screen froze."""
    from browser_helpers import sign_in
    from playwright.sync_api import WebSocketRoute, expect

    relays: list[tuple[WebSocketRoute, list[str]]] = []

    def relay(ws: WebSocketRoute) -> None:  # the page's sockets go through, their messages noted
        server = ws.connect_to_server()
        sent: list[str] = []

        def forward(message: str | bytes) -> None:
            sent.append(str(message))
            server.send(message)

        ws.on_message(forward)
        relays.append((ws, sent))

    page.route_web_socket(re.compile(r"/api/live"), relay)
    base = shop.url("web-bff")
    sign_in(page, base, then="emails")
    expect(page.get_by_test_id("live")).to_have_text("live: connected")
    # 100 e-mails, 0.05 s each (the test shop's --email-delay): the job runs for about 5 s
    page.get_by_test_id("email-count").fill("100")
    page.get_by_test_id("send-emails").click()
    expect(page.get_by_test_id("job-state")).to_have_text("running")
    first, _ = relays[0]
    first.close(code=1001, reason="server shutting down")
    expect(page.get_by_test_id("job-state")).to_have_text("completed", timeout=20_000)
    expect(page.get_by_test_id("job-done")).to_have_text("100")
    expect(page.get_by_test_id("live")).to_have_text("live: connected")
    assert len(relays) == 2, relays
    _, resent = relays[1]
    assert any('"subscribe"' in m and '"jobs/' in m for m in resent), resent


def test_a_screen_answered_after_the_page_moved_on_does_not_cover_the_next_one(shop: Shop, page: Any) -> None:
    """The home screen's call answers after the visitor went to the login form: the late home
    screen must not be drawn over the form (it was, and the form was gone)."""
    from playwright.sync_api import Route, expect

    held: list[Route] = []

    def hold(route: Route) -> None:  # answered only when the test says so
        held.append(route)

    page.route(re.compile(r"/api/home"), hold)
    base = shop.url("web-bff")
    page.goto(base + "/#/")
    expect(page.get_by_text("Loading…")).to_be_visible()
    assert len(held) == 1, held
    page.evaluate("location.hash = '#/login'")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    held[0].continue_()
    # the late answer arrives and is dropped: the form stays, no product list, no error
    page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("login-form")).to_be_visible()
    expect(page.get_by_test_id("products")).to_have_count(0)
    expect(page.get_by_test_id("error")).to_have_count(0)
    page.unroute(re.compile(r"/api/home"), hold)
