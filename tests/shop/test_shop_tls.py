"""``edgeway demo --tls``: the shop over HTTPS, with mutual TLS between the edges and the services.

One ``--tls`` shop for the module (it is the slow part): the edges answer over HTTPS verified with
the demo's CA; a service refuses plaintext and clients without a certificate from that CA; a
checkout through the web BFF (mTLS to orders, which calls inventory and payments over mTLS)
confirms; and a real browser checks out over HTTPS.

The browser: Chromium is told to accept the demo's server certificate by its public key
(``--ignore-certificate-errors-spki-list``, the SHA-256 of the leaf's SubjectPublicKeyInfo): making
headless Chromium trust a CA needs an NSS database. That flag alone would accept the key without
its chain, so the test also verifies the chain the web BFF serves against the demo CA with
Python's ``ssl`` and checks it is the same key.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from shop_browser import sign_in_and_check_out
from shop_system import PARTNER, Shop, running_shop

from conftest import require

pytestmark = pytest.mark.xdist_group("shop-tls")

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory.mktemp("shop-tls"), tls=True) as system:
        yield system


def _served_certificate(shop: Shop, name: str) -> bytes:
    """The DER certificate ``name`` serves, after verifying its chain against the demo CA."""
    context = shop.tls_context(client_cert=False)
    with (
        socket.create_connection(("127.0.0.1", shop.ports[name]), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _spki_hash(der: bytes) -> str:
    public = x509.load_der_x509_certificate(der).public_key()
    spki = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def test_every_edge_answers_over_https_verified_with_the_demo_ca(shop: Shop) -> None:
    ca = shop.data_dir / "tls" / "ca.pem"
    # a client of an edge needs the CA only, no client certificate
    with httpx.Client(verify=shop.tls_context(client_cert=False), timeout=10) as client:
        page = client.get(shop.url("web-bff") + "/")
        assert page.status_code == 200, page.text
        assert client.get(shop.url("mobile-bff") + "/m/home").status_code == 200
        token = client.post(
            shop.url("gateway") + "/oauth/token", data={"grant_type": "client_credentials"}, auth=PARTNER
        )
        assert token.status_code == 200, token.text
        # one aggregate call fans out over mTLS to catalog, inventory and the legacy monolith;
        # their fallbacks (null stock, no reviews) would show a failed handshake
        full = client.get(
            shop.url("gateway") + "/v1/products/BEA-01/full",
            headers=shop.bearer(str(token.json()["access_token"])),
        )
        assert full.status_code == 200, full.text
        assert full.json()["stock"]["available"] is not None, full.json()
        assert full.json()["rating"]["count"] >= 1, full.json()
    # without the CA the edge's certificate is not trusted: it is not a public one
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(shop.url("web-bff") + "/", verify=ssl.create_default_context(), timeout=10)
    # the banner says where the CA is and prints https:// URLs
    assert str(ca) in shop.output()
    assert f"{shop.url('gateway')}/v1/products" in shop.output()
    assert shop.url("gateway").startswith("https://")


def test_a_service_refuses_plaintext_and_clients_without_a_certificate(shop: Shop) -> None:
    port = shop.ports["catalog-1"]
    # with the demo's client certificate: served (this is what the edges present)
    assert shop.get("catalog-1", "/health/ready").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
    with pytest.raises(httpx.TransportError):
        # the handshake is refused once the server sees no certificate (TLS 1.3: on the first read)
        httpx.get(
            shop.url("catalog-1") + "/health/ready", verify=shop.tls_context(client_cert=False), timeout=5
        )


def test_a_checkout_through_the_web_bff_is_confirmed_over_mtls(shop: Shop) -> None:
    edge = shop.url("web-bff")
    token = shop.login("bob", base=edge, path="/api/oauth/token")
    with httpx.Client(
        verify=shop.tls_context(client_cert=False), timeout=10, headers=shop.bearer(token)
    ) as client:
        placed = client.post(edge + "/api/orders", json={"items": [{"sku": "BEA-02", "qty": 1}]})
        assert placed.status_code == 202, placed.text
        order_id = placed.json()["id"]

        def confirmed() -> dict[str, Any] | None:
            order = dict(client.get(f"{edge}/api/orders/{order_id}").json())
            return order if order["status"] in {"confirmed", "cancelled"} else None

        done = shop.wait(confirmed, 20, f"order {order_id} to settle")
    # reserved at inventory and charged at payments, both called by orders over mTLS
    assert done["status"] == "confirmed", done
    assert shop.get("payments", f"/payments/{order_id}", "bob").json()["status"] != "declined"


def test_a_browser_checks_out_through_the_web_bff_over_https(shop: Shop) -> None:
    require("chromium")
    sync_api = pytest.importorskip("playwright.sync_api")
    base = shop.url("web-bff")
    spki = _spki_hash(_served_certificate(shop, "web-bff"))  # the chain verifies against the demo CA
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", f"--ignore-certificate-errors-spki-list={spki}"],
        )
        try:
            page = browser.new_context(ignore_https_errors=False).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            sign_in_and_check_out(page, shop, base, "via web BFF")
            sync_api.expect(page.get_by_test_id("live")).to_have_text("live: connected")  # wss://
            assert page.evaluate("location.protocol") == "https:"
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()
