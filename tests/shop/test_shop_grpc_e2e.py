"""The shop over real processes (``edgeway demo --system``) with its inside transport ``grpc``:
inventory serves gRPC beside HTTP, the orders service finds its ``grpc://`` address in the NATS
KV registry and its saga reserves and commits over it; the BFFs find the same address there and
read the product page's stock over gRPC, and catalog's (both instances serve
``shop.catalog.v1.Catalog``) for the product, its price, the product list and the home screens'
products and categories; the edges still answer JSON."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from shop_system import Shop

import edgeway.demo.shop
from edgeway.demo.launch import launched_demo

pytestmark = pytest.mark.xdist_group("shop-e2e")

SHOP = Path(edgeway.demo.shop.__file__).resolve().parent


def _system(tmp: Path) -> Path:
    """The shop's system file with gRPC inside: a gRPC port for inventory, the transport for orders."""
    data: dict[str, Any] = yaml.safe_load((SHOP / "edgeway.system.yaml").read_text())
    # inventory serves gRPC on its grpc_port (the demo picks a free one: `inventory-grpc`)
    assert data["services"]["inventory"]["grpc_port"]
    data["services"]["orders"]["env"] = {"EDGEWAY_INSIDE_TRANSPORT": "grpc"}
    for edge in data["edges"].values():
        edge["config"] = str(SHOP / edge["config"])
    for bff in ("web-bff", "mobile-bff"):
        data["edges"][bff]["env"] = {"EDGEWAY_INSIDE_TRANSPORT": "grpc"}
    path = tmp / "edgeway.system.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("shop-grpc")
    with launched_demo(tmp / "run", system=_system(tmp), extra_args=["--email-delay", "0.05"]) as demo:
        system = Shop(demo)
        try:
            yield system
        finally:
            system.http.close()


def _grpc_calls(shop: Shop, method: str, service: str = "inventory") -> list[str]:
    """A service's access lines for ``method`` in the demo's merged log: ``inventory │ 13:30:56 grpc
    /shop.inventory.v1.Inventory/Reserve OK 327.9ms req=...`` (``catalog-1 │ ...`` for an
    instance of catalog)."""
    return [
        line for line in shop.output().splitlines() if line.startswith(service) and f"grpc {method} " in line
    ]


def test_an_order_is_reserved_and_committed_over_grpc_and_confirmed(shop: Shop) -> None:
    before = shop.get("inventory", "/stock/CUP-01").json()
    response = shop.post("orders", "/orders", "alice", json={"items": [{"sku": "CUP-01", "qty": 1}]})
    assert response.status_code == 202, response.text
    order_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        order = shop.get("orders", f"/orders/{order_id}", "alice").json()
        return order if order["status"] in ("confirmed", "cancelled") else None

    done = shop.wait(finished, 30, f"order {order_id} to finish")
    assert done["status"] == "confirmed", done
    after = shop.get("inventory", "/stock/CUP-01").json()
    assert after["on_hand"] == before["on_hand"] - 1
    # the access lines reach the demo's merged log a little after the calls answered
    for method in ("Reserve", "Commit"):
        calls = shop.wait(functools.partial(_grpc_calls, shop, f"/shop.inventory.v1.Inventory/{method}"), 10)
        assert " OK " in calls[0]
    # the edges and the saga's other peer stay JSON: no reservation was made over HTTP
    assert "POST /reservations" not in shop.output()


def test_the_web_bffs_product_page_reads_the_stock_over_grpc(shop: Shop) -> None:
    """The BFF's `inventory-grpc` follows the instances' registered gRPC address (nats_kv, meta
    grpc): the page has inventory's figure, and inventory logged a Stock call."""
    available = shop.get("inventory", "/stock/PRS-01").json()["available"]

    def page() -> dict[str, Any] | None:
        body: dict[str, Any] = shop.get("web-bff", "/api/products/PRS-01").json()
        return body if body["stock"] == {"available": available} else None

    shop.wait(page, what="the product page with inventory's stock")
    # inventory writes its access line after it answers: wait for it, as for Reserve and Commit
    assert shop.wait(functools.partial(_grpc_calls, shop, "/shop.inventory.v1.Inventory/Stock"), 10)


def test_the_product_screens_read_the_product_and_its_price_over_grpc(shop: Shop) -> None:
    """Both BFFs' product screens show catalog's product and price, read by GetProduct at one of
    catalog's instances (its registered gRPC address): catalog logged the gRPC calls."""
    product = shop.get("catalog-1", "/products/POT-01").json()
    page = shop.get("web-bff", "/api/products/POT-01")
    assert page.status_code == 200, page.text
    assert {k: page.json()[k] for k in ("sku", "name", "description", "category", "price_cents")} == {
        k: product[k] for k in ("sku", "name", "description", "category", "price_cents")
    }
    card = shop.get("mobile-bff", "/m/products/POT-01")
    assert card.status_code == 200, card.text
    assert (card.json()["name"], card.json()["price"]) == (product["name"], product["price_cents"])
    calls = shop.wait(
        functools.partial(_grpc_calls, shop, "/shop.catalog.v1.Catalog/GetProduct", "catalog"), 10
    )
    assert " OK " in calls[0]
    # the list too: the web app's product list is ListProducts, answered as catalog's JSON
    listed = shop.get("web-bff", "/api/products?category=brewers").json()
    assert listed == shop.get("catalog-1", "/products?category=brewers").json()
    assert shop.wait(
        functools.partial(_grpc_calls, shop, "/shop.catalog.v1.Catalog/ListProducts", "catalog"), 10
    )


def test_the_home_screens_read_the_categories_over_grpc(shop: Shop) -> None:
    """Both home screens load; the web's categories are catalog's ``GET /categories`` answer, read
    by ListCategories at one of catalog's instances: catalog logged the gRPC calls."""
    categories = shop.get("catalog-1", "/categories").json()
    home = shop.get("web-bff", "/api/home")
    assert home.status_code == 200, home.text
    assert home.json()["categories"] == categories
    assert shop.get("mobile-bff", "/m/home").status_code == 200
    calls = shop.wait(
        functools.partial(_grpc_calls, shop, "/shop.catalog.v1.Catalog/ListCategories", "catalog"), 10
    )
    assert " OK " in calls[0]


def test_a_price_change_shows_on_the_product_screens_read_over_grpc(shop: Shop) -> None:
    before = shop.get("catalog-1", "/products/CUP-02").json()["price_cents"]
    changed = shop.put("catalog-1", "/products/CUP-02/price", "ada", json={"price_cents": before + 101})
    assert changed.status_code == 200, changed.text

    def new_price() -> tuple[int, int, int] | None:
        web = shop.get("web-bff", "/api/products/CUP-02").json()["price_cents"]
        mobile = shop.get("mobile-bff", "/m/products/CUP-02").json()["price"]
        # the home screen (a Python endpoint: ListProducts from Python) is not cached
        home = shop.get("web-bff", "/api/home").json()["products"]
        listed = next(p["price_cents"] for p in home if p["sku"] == "CUP-02")
        return (web, mobile, listed) if web == mobile == listed == before + 101 else None

    # the routes cache the page for 2 s: the new price shows once that has passed
    shop.wait(new_price, 10, "the new price on both BFFs' product screens and the home screen")


def test_an_unknown_product_is_catalogs_404_problem_through_the_grpc_edges(shop: Shop) -> None:
    for edge, path in (("web-bff", "/api/products/NOPE-9"), ("mobile-bff", "/m/products/NOPE-9")):
        answer = shop.get(edge, path)
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == "https://shop.edgeway.example/problems/unknown-product"
        assert (problem["detail"], problem["call"], problem["grpc_status"]) == (
            "no product NOPE-9",
            "product",
            "NOT_FOUND",
        )
