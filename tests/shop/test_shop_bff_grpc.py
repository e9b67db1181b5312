"""The BFFs' product screens with the shop's inside transport ``grpc``: the product (and its price)
is an aggregate gRPC call to catalog's ``GetProduct``, the stock one to inventory's ``Stock``, the
web's product list a transcoded ``ListProducts`` (product-*.grpc.yaml, the descriptor set shipped
in the package), and the client gets the same JSON as with ``http`` (product-*.http.yaml). The
home screens (Python endpoints, screens.py) read catalog's products and categories with
``ListProducts`` and ``ListCategories`` the same way, from Python.

Real pieces: catalog and inventory each serving its HTTP app on a port and its gRPC service on
another, and a gateway loading the shop's own route file for the transport; the legacy reviews
are a small stub (they are not what differs between the transports).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from gateway_helpers import read_request
from grpc_helpers import ISSUER, Issuer, identity_settings, issuer

import edgeway.demo.shop
from conftest import delete_nats_streams, held_ports, require
from edgeway.demo.shop.catalog.app import create_app as catalog_app
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.demo.shop.inventory.app import create_app as inventory_app
from edgeway.gateway.config.loader import load_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket
from edgeway.observability.logs import request_id_var, trace_id_var

pytestmark = pytest.mark.timeout(90)

EDGES = Path(edgeway.demo.shop.__file__).resolve().parent / "edges"
SKUS = ("CUP-01", "BEA-01", "BARE-1")  # the last has no stock record (a product added by the test)
PATHS = {"web": "/api/products", "mobile": "/m/products"}


@pytest.fixture
async def signer() -> AsyncIterator[Issuer]:
    async with issuer() as found:
        yield found


@contextlib.asynccontextmanager
async def kit_service(
    tmp_path: Path, signer: Issuer, create_app: Callable[[ShopSettings], FastAPI], name: str
) -> AsyncIterator[tuple[int, int, httpx.AsyncClient]]:
    """A shop service on real ports: (HTTP port, gRPC port, an HTTP client of it)."""
    require("nats")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    http_port, grpc_port = held_ports(2)
    settings = ShopSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/{name}.db",
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:4222",
        bus_prefix=prefix,
        token_audience=None,
        grpc_port=grpc_port,
        **identity_settings(signer),
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            server = uvicorn.Server(
                uvicorn.Config(app, host="127.0.0.1", port=http_port, lifespan="off", log_level="warning")
            )
            serving = asyncio.create_task(server.serve())
            try:
                while not server.started:
                    await asyncio.sleep(0.02)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
                    yield http_port, grpc_port, client
            finally:
                server.should_exit = True
                await serving
    finally:
        await delete_nats_streams(prefix)


def inventory(
    tmp_path: Path, signer: Issuer
) -> contextlib.AbstractAsyncContextManager[tuple[int, int, httpx.AsyncClient]]:
    return kit_service(tmp_path, signer, inventory_app, "inventory")


def catalog(
    tmp_path: Path, signer: Issuer
) -> contextlib.AbstractAsyncContextManager[tuple[int, int, httpx.AsyncClient]]:
    return kit_service(tmp_path, signer, catalog_app, "catalog")


@contextlib.asynccontextmanager
async def reviews() -> AsyncIterator[int]:
    """legacy's ``/reviews/<sku>``, the same for every SKU."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await read_request(r)
                body = orjson.dumps({"reviews": [], "average": 4.5, "count": 2})
                w.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
                    % len(body)
                    + body
                )
                await w.drain()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@dataclass
class Shop:
    """catalog, inventory and the reviews stub running: where each listens, clients of the two."""

    ports: dict[str, int]
    catalog: httpx.AsyncClient
    inventory: httpx.AsyncClient
    admin: dict[str, str]


@contextlib.asynccontextmanager
async def services(tmp_path: Path, signer: Issuer) -> AsyncIterator[Shop]:
    async with (
        catalog(tmp_path, signer) as (catalog_http, catalog_grpc, catalog_client),
        inventory(tmp_path, signer) as (inventory_http, inventory_grpc, inventory_client),
        reviews() as reviews_port,
    ):
        ports = {
            "catalog": catalog_http,
            "catalog-grpc": catalog_grpc,
            "inventory": inventory_http,
            "inventory-grpc": inventory_grpc,
            "legacy": reviews_port,
        }
        admin = {"authorization": f"Bearer {signer.token('ops', roles=['admin'])}"}
        yield Shop(ports, catalog_client, inventory_client, admin)


@contextlib.asynccontextmanager
async def bff(
    tmp_path: Path, screen: str, transport: str, ports: dict[str, int], jwks_url: str
) -> AsyncIterator[int]:
    """A gateway with the shop's route file for ``screen`` (web, mobile) and ``transport``, as the
    BFF includes it for EDGEWAY_INSIDE_TRANSPORT, and the services at the given ports (the kit
    registers grpc://; the gateway's services are written http://)."""
    config = {"include": [str(EDGES / f"product-{screen}.{transport}.yaml")]}
    async with serve(tmp_path / f"{screen}-{transport}.yaml", config, ports, jwks_url) as port:
        yield port


@contextlib.asynccontextmanager
async def home_bff(
    tmp_path: Path, transport: str, ports: dict[str, int], jwks_url: str
) -> AsyncIterator[int]:
    """A gateway serving the two BFFs' home screens (screens.py) as their edge files route them,
    ``options.inside_transport`` being what web-bff.yaml and mobile-bff.yaml set it from
    EDGEWAY_INSIDE_TRANSPORT (test_the_bff_edge_files_tell_the_home_screens_the_inside_transport)."""
    options = {"inside_transport": transport}
    config = {
        "python": {"modules": ["edgeway.demo.shop.bff.screens"]},
        "routes": [
            {
                "id": "home",
                "match": {"path": "/api/home", "methods": ["GET"]},
                "auth": {"mode": "optional"},
                "endpoint": {"name": "web_home", "options": options},
            },
            {
                "id": "m-home",
                "match": {"path": "/m/home", "methods": ["GET"]},
                "auth": {"mode": "optional"},
                "endpoint": {"name": "mobile_home", "options": options},
            },
        ],
    }
    async with serve(tmp_path / f"home-{transport}.yaml", config, ports, jwks_url) as port:
        yield port


@contextlib.asynccontextmanager
async def serve(
    path: Path, config: dict[str, Any], ports: dict[str, int], jwks_url: str
) -> AsyncIterator[int]:
    """A gateway with ``config`` and the services at the given ports, on a free port."""
    config = {
        **config,
        "access_log": {"enabled": False},
        # the mobile card and the home screens read a token when one is sent
        "auth": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": "edgeway"},
        "services": {name: {"instances": [f"http://127.0.0.1:{port}"]} for name, port in ports.items()},
    }
    path.write_text(yaml.safe_dump(config))
    gw = Gateway(load_config(path, {}), AccessLog("bff", io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


async def _screens(
    tmp_path: Path, screen: str, paths: list[str], ports: dict[str, int], jwks_url: str
) -> dict[str, list[Any]]:
    """Each transport's answers for every path: (status, content type, body)."""
    found: dict[str, list[Any]] = {}
    for transport in ("http", "grpc"):
        async with (
            bff(tmp_path, screen, transport, ports, jwks_url) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            answers = [await client.get(path) for path in paths]
        found[transport] = [(a.status_code, a.headers["content-type"], a.json()) for a in answers]
    return found


def _pages(screen: str) -> list[str]:
    return [f"{PATHS[screen]}/{sku}" for sku in SKUS]


def _failed_calls(answers: list[Any]) -> list[list[str]]:
    """Which calls each answer says failed; their reasons are the transport's own (inventory's
    404 over HTTP, no level for the SKU over gRPC), the page is the same."""
    return [sorted(body.pop("_meta", {}).get("errors", {})) for _, _, body in answers]


def _without_request_id(answers: list[Any]) -> list[Any]:
    """The answers with the gateway's request id (a new one per request) left out."""
    return [
        (status, kind, {k: v for k, v in body.items() if k != "request_id"}) for status, kind, body in answers
    ]


async def test_the_product_screens_show_the_same_product_price_and_stock_over_grpc_as_over_http(
    tmp_path: Path, signer: Issuer
) -> None:
    async with services(tmp_path, signer) as shop:
        # 0 available: proto3 JSON would leave the field out; the call prints it, as JSON does
        emptied = await shop.inventory.put("/stock/BEA-01", json={"on_hand": 0}, headers=shop.admin)
        assert emptied.status_code == 200, emptied.text
        cups = (await shop.inventory.get("/stock/CUP-01")).json()["available"]
        assert cups > 0
        # a product without a description: proto3 JSON would leave the empty string out
        added = await shop.catalog.post(
            "/products",
            json={"sku": "BARE-1", "name": "Bare", "category": "misc", "price_cents": 12_345_678_901},
            headers=shop.admin,
        )
        assert added.status_code == 201, added.text
        product = (await shop.catalog.get("/products/CUP-01")).json()
        web = await _screens(tmp_path, "web", _pages("web"), shop.ports, signer.jwks_url)
        mobile = await _screens(tmp_path, "mobile", _pages("mobile"), shop.ports, signer.jwks_url)
    for screens in (web, mobile):
        assert _failed_calls(screens["grpc"]) == _failed_calls(screens["http"]) == [[], [], ["stock"]]
    assert web["grpc"] == web["http"]
    assert [status for status, _, _ in web["grpc"]] == [200, 200, 200]
    cup, beans, bare = (body for _, _, body in web["grpc"])
    assert cup == {
        **{k: product[k] for k in ("sku", "name", "description", "category", "price_cents")},
        "stock": {"available": cups},
        "reviews": {"reviews": [], "average": 4.5, "count": 2},
    }
    assert beans["stock"] == {"available": 0}
    # the price beyond int32 is a number (int64 prints as a string in proto3 JSON), "" still there
    assert bare["price_cents"] == 12_345_678_901
    assert bare["description"] == ""
    assert bare["stock"] == {"available": None}  # no stock record: the optional call's fallback
    assert mobile["grpc"] == mobile["http"]
    assert next(body for _, _, body in mobile["grpc"]) == {
        "sku": "CUP-01",
        "name": product["name"],
        "price": product["price_cents"],
        "in_stock": cups,
        "rating": 4.5,
    }
    assert [body["in_stock"] for _, _, body in mobile["grpc"]] == [cups, 0, None]


async def test_the_product_list_is_the_same_over_grpc_as_over_http(tmp_path: Path, signer: Issuer) -> None:
    paths = [
        "/api/products",
        "/api/products?limit=3&offset=2",
        "/api/products?category=cups&q=CAPPU",
        "/api/products?q=no-such-product",  # an empty page: items [] and total 0 still print
        "/api/products?utm_source=mail",  # a parameter catalog does not know is ignored
    ]
    async with services(tmp_path, signer) as shop:
        direct = [(await shop.catalog.get(path.removeprefix("/api"))).json() for path in paths]
        web = await _screens(tmp_path, "web", paths, shop.ports, signer.jwks_url)
    assert web["grpc"] == web["http"]
    assert [body for _, _, body in web["grpc"]] == direct
    assert [len(body["items"]) for body in direct[:2]] == [direct[0]["total"], 3]
    assert direct[2]["total"] > 0
    assert direct[3] == {"items": [], "total": 0}


async def test_an_unknown_product_is_catalogs_404_problem_over_either_transport(
    tmp_path: Path, signer: Issuer
) -> None:
    async with services(tmp_path, signer) as shop:
        web = await _screens(tmp_path, "web", ["/api/products/NOPE-9"], shop.ports, signer.jwks_url)
        mobile = await _screens(tmp_path, "mobile", ["/m/products/NOPE-9"], shop.ports, signer.jwks_url)
    for screens in (web, mobile):
        (over_http,) = _without_request_id(screens["http"])
        (over_grpc,) = _without_request_id(screens["grpc"])
        status, kind, problem = over_grpc
        assert (status, kind) == (over_http[0], over_http[1]) == (404, "application/problem+json")
        # catalog's problem, whichever way it came: its type, title and detail
        same = ("type", "title", "status", "detail", "call")
        assert (
            {k: problem[k] for k in same}
            == {k: over_http[2][k] for k in same}
            == {
                "type": "https://shop.edgeway.example/problems/unknown-product",
                "title": "Not Found",
                "status": 404,
                "detail": "no product NOPE-9",
                "call": "product",
            }
        )
        # what only the gRPC answer says: the status code (the HTTP one names catalog's path)
        assert (problem["grpc_status"], problem["reason"]) == ("NOT_FOUND", "NOT_FOUND")
        assert "instance" not in problem
        assert over_http[2]["instance"] == "/products/NOPE-9"
        assert set(problem) - set(over_http[2]) == {"grpc_status", "reason"}


async def test_a_value_catalog_refuses_is_refused_over_grpc_too_as_400(
    tmp_path: Path, signer: Issuer
) -> None:
    """Catalog's 422 over HTTP; over gRPC its INVALID_ARGUMENT, which the gateway answers 400
    (google.rpc's mapping), naming the field: refused either way, never a page."""
    paths = ["/api/products/cup-1", "/api/products?limit=0", "/api/products?limit=many"]
    async with services(tmp_path, signer) as shop:
        web = await _screens(tmp_path, "web", paths, shop.ports, signer.jwks_url)
    assert [status for status, _, _ in web["http"]] == [422, 422, 422]
    assert [status for status, _, _ in web["grpc"]] == [400, 400, 400]
    assert all(kind == "application/problem+json" for _, kind, _ in web["grpc"])
    page, limit, unparsable = (body for _, _, body in web["grpc"])
    assert (page["call"], page["grpc_status"]) == ("product", "INVALID_ARGUMENT")
    assert [e["field"] for e in page["errors"]] == ["sku"]
    assert limit["grpc_status"] == "INVALID_ARGUMENT"
    assert [e["field"] for e in limit["errors"]] == ["limit"]
    assert "grpc_status" not in unparsable  # not an int32: refused by the edge, nothing sent


async def test_catalog_down_answers_as_over_http(tmp_path: Path, signer: Issuer) -> None:
    """Nothing listens where catalog's HTTP and gRPC ports were: the product screens fail the
    same way (the required call's 502, ``connect_failed``); the product list, a transcoded call,
    answers 503 as the transcoder answers an unreachable gRPC service (the proxy: 502)."""
    async with services(tmp_path, signer) as shop:
        nowhere, nowhere_grpc = held_ports(2)
        ports = {**shop.ports, "catalog": nowhere, "catalog-grpc": nowhere_grpc}
        web = await _screens(
            tmp_path, "web", ["/api/products/CUP-01", "/api/products"], ports, signer.jwks_url
        )
        mobile = await _screens(tmp_path, "mobile", ["/m/products/CUP-01"], ports, signer.jwks_url)
    for screens in (web, mobile):
        (status, kind, over_grpc) = _without_request_id(screens["grpc"])[0]
        (_, _, over_http) = _without_request_id(screens["http"])[0]
        assert (
            (status, kind)
            == (screens["http"][0][0], screens["http"][0][1])
            == (502, "application/problem+json")
        )
        # the detail names the service the call reached (catalog, catalog-grpc) and its error
        assert {k: v for k, v in over_grpc.items() if k != "detail"} == {
            k: v for k, v in over_http.items() if k != "detail"
        }
        assert over_grpc["code"] == "connect_failed"
        assert over_grpc["call"] == "product"
    assert [status for status, _, _ in web["http"][1:]] == [502]
    assert [status for status, _, _ in web["grpc"][1:]] == [503]


async def test_the_grpc_calls_really_go_over_grpc(tmp_path: Path, signer: Issuer) -> None:
    """With catalog's and inventory's HTTP ports pointing nowhere, the grpc screens still have the
    product, its price and the stock, and the http screens fail: the figures came over gRPC."""
    async with services(tmp_path, signer) as shop:
        cups = (await shop.inventory.get("/stock/CUP-01")).json()["available"]
        price = (await shop.catalog.get("/products/CUP-01")).json()["price_cents"]
        nowhere = held_ports(2)
        ports = {**shop.ports, "catalog": nowhere[0], "inventory": nowhere[1]}
        web = await _screens(
            tmp_path, "web", ["/api/products/CUP-01", "/api/products"], ports, signer.jwks_url
        )
    (page_status, _, page), (list_status, _, listed) = web["grpc"]
    assert (page_status, page["price_cents"], page["stock"]) == (200, price, {"available": cups})
    assert list_status == 200
    assert listed["total"] > 0
    assert [status for status, _, _ in web["http"]] == [502, 502]


class GrpcAccess(logging.Handler):
    """The kit's gRPC access lines (``edgeway.access``, protocol grpc): (method path, gRPC code,
    the request id and trace id the call ran under)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.calls: list[tuple[str, str, str | None, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "protocol", None) == "grpc":
            # emitted in the call's context: its request id and trace are the bound ones
            fields = record.__dict__  # the line's `extra`
            self.calls.append((fields["path"], fields["grpc_code"], request_id_var.get(), trace_id_var.get()))


@contextlib.contextmanager
def grpc_access() -> Iterator[GrpcAccess]:
    handler = GrpcAccess()
    logger = logging.getLogger("edgeway.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def _homes(tmp_path: Path, ports: dict[str, int], jwks_url: str) -> dict[str, list[httpx.Response]]:
    """Each transport's answers for /api/home and /m/home."""
    found: dict[str, list[httpx.Response]] = {}
    for transport in ("http", "grpc"):
        async with (
            home_bff(tmp_path, transport, ports, jwks_url) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            found[transport] = [await client.get(path) for path in ("/api/home", "/m/home")]
    return found


def _trace_id(answer: httpx.Response) -> str:
    return answer.headers["traceparent"].split("-")[1]


async def test_the_home_screens_are_the_same_bytes_over_grpc_as_over_http(
    tmp_path: Path, signer: Issuer
) -> None:
    async with services(tmp_path, signer) as shop:
        # a price beyond int32 and an empty description: what proto3 JSON would print otherwise
        added = await shop.catalog.post(
            "/products",
            json={"sku": "BARE-1", "name": "Bare", "category": "misc", "price_cents": 12_345_678_901},
            headers=shop.admin,
        )
        assert added.status_code == 201, added.text
        listed = (await shop.catalog.get("/products", params={"limit": "50"})).json()
        categories = (await shop.catalog.get("/categories")).json()
        with grpc_access() as access:
            homes = await _homes(tmp_path, shop.ports, signer.jwks_url)
    over_http, over_grpc = homes["http"], homes["grpc"]
    assert [a.status_code for a in over_http + over_grpc] == [200] * 4
    assert [a.content for a in over_grpc] == [a.content for a in over_http]
    assert [a.headers["content-type"] for a in over_grpc] == ["application/json"] * 2
    web, mobile = (a.json() for a in over_grpc)
    assert [p["sku"] for p in web["products"]] == [p["sku"] for p in listed["items"]]
    bare = next(p for p in web["products"] if p["sku"] == "BARE-1")
    assert (bare["price_cents"], bare["description"]) == (12_345_678_901, "")
    # catalog's JSON route's answer, the new product's category counted
    assert web["categories"] == categories
    assert {"name": "misc", "count": 1} in categories
    assert web["orders"] == [] == mobile["orders"]
    assert len(mobile["products"]) == min(20, len(listed["items"]))
    # catalog served ListCategories and ListProducts over gRPC for the web's home call and only
    # ListProducts for the phone's (it shows no categories), under the gateway's request id and
    # in its trace (the two calls of a screen run at once: their lines come in either order)
    web_answer, mobile_answer = over_grpc
    assert sorted(access.calls) == sorted(
        (f"/shop.catalog.v1.Catalog/{method}", "OK", a.headers["x-request-id"], _trace_id(a))
        for a, methods in (
            (web_answer, ("ListCategories", "ListProducts")),
            (mobile_answer, ("ListProducts",)),
        )
        for method in methods
    )


async def test_the_home_screens_really_read_the_catalog_over_grpc(tmp_path: Path, signer: Issuer) -> None:
    """catalog's gRPC port pointing nowhere: the grpc home screens fail and the http ones do not;
    and the other way round, catalog's HTTP port pointing nowhere: the grpc screens still have
    the categories and the products (nothing of catalog is read over HTTP), the http ones fail."""
    async with services(tmp_path, signer) as shop:
        categories = (await shop.catalog.get("/categories")).json()
        nowhere = held_ports(2)
        no_grpc = await _homes(tmp_path, {**shop.ports, "catalog-grpc": nowhere[0]}, signer.jwks_url)
        no_http = await _homes(tmp_path, {**shop.ports, "catalog": nowhere[1]}, signer.jwks_url)
    assert [a.status_code for a in no_grpc["http"]] == [200, 200]
    assert [a.status_code for a in no_grpc["grpc"]] == [502, 502]
    assert [a.status_code for a in no_http["http"]] == [502, 502]
    assert [a.status_code for a in no_http["grpc"]] == [200, 200]
    web, mobile = (a.json() for a in no_http["grpc"])
    assert web["categories"] == categories
    assert web["products"]
    assert mobile["products"]


async def test_catalog_down_fails_the_home_screens_as_over_http(tmp_path: Path, signer: Issuer) -> None:
    """Nothing listens where catalog's ports were: the same 502 problem either way, naming the
    service the products call reached and why (``connect_failed``)."""
    async with services(tmp_path, signer) as shop:
        nowhere, nowhere_grpc = held_ports(2)
        ports = {**shop.ports, "catalog": nowhere, "catalog-grpc": nowhere_grpc}
        homes = await _homes(tmp_path, ports, signer.jwks_url)
    for over_http, over_grpc in zip(homes["http"], homes["grpc"], strict=True):
        assert over_grpc.status_code == over_http.status_code == 502
        assert (
            over_grpc.headers["content-type"]
            == over_http.headers["content-type"]
            == "application/problem+json"
        )
        http_problem, grpc_problem = over_http.json(), over_grpc.json()
        same = ("type", "title", "status", "code")
        assert {k: grpc_problem[k] for k in same} == {k: http_problem[k] for k in same}
        assert grpc_problem["code"] == "connect_failed"
        # every catalog call of a screen goes over its transport
        assert (http_problem["service"], grpc_problem["service"]) == ("catalog", "catalog-grpc")


async def test_list_categories_answers_what_the_json_route_answers(tmp_path: Path, signer: Issuer) -> None:
    """catalog's ListCategories, called with its generated stub on its gRPC port, against
    ``GET /categories`` on its HTTP port: the same categories, counts and order, a new product
    counted in both."""
    import grpc

    from edgeway.demo.shop.catalog.v1 import catalog_pb2, catalog_pb2_grpc

    async with services(tmp_path, signer) as shop:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{shop.ports['catalog-grpc']}") as channel:
            stub = catalog_pb2_grpc.CatalogStub(channel)
            before = await stub.ListCategories(catalog_pb2.ListCategoriesRequest())
            added = await shop.catalog.post(
                "/products",
                json={"sku": "CUP-99", "name": "Ninety-nine", "category": "cups", "price_cents": 990},
                headers=shop.admin,
            )
            assert added.status_code == 201, added.text
            after = await stub.ListCategories(catalog_pb2.ListCategoriesRequest())
        listed = (await shop.catalog.get("/categories")).json()
    names = [c.name for c in after.categories]
    assert [{"name": c.name, "count": c.count} for c in after.categories] == listed
    assert names == sorted(names)
    cups = {c.name: c.count for c in before.categories}["cups"]
    assert {c.name: c.count for c in after.categories}["cups"] == cups + 1


def test_the_bff_edge_files_tell_the_home_screens_the_inside_transport() -> None:
    """web-bff.yaml and mobile-bff.yaml set the home routes' ``inside_transport`` from
    EDGEWAY_INSIDE_TRANSPORT, as they pick product-*.<transport>.yaml: http by default."""
    for name, route in (("web-bff.yaml", "home"), ("mobile-bff.yaml", "m-home")):
        for env, expected in (({}, "http"), ({"EDGEWAY_INSIDE_TRANSPORT": "grpc"}, "grpc")):
            config = load_config(EDGES / name, env)
            (found,) = (r for r in config.routes if r.id == route)
            assert found.endpoint is not None
            assert found.endpoint.options == {"inside_transport": expected}
            # the product routes of the same transport were included beside it
            included = {r.id for r in config.routes}
            assert ("products" in included) if name == "web-bff.yaml" else ("m-product" in included)
