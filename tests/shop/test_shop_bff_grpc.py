"""The BFFs' product screens with the shop's inside transport ``grpc``: the stock call is an
aggregate gRPC call to inventory's ``Stock`` (product-*.grpc.yaml, the descriptor set shipped in
the package), and the client gets the same JSON as with ``http`` (product-*.http.yaml).

Real pieces: inventory serving its HTTP app on a port and ``shop.inventory.v1.Inventory`` on
another, and a gateway loading the shop's own route file for the transport; catalog and the
legacy reviews are small stubs (they are not what differs between the transports).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
import yaml
from gateway_helpers import read_request
from grpc_helpers import ISSUER, Issuer, identity_settings, issuer

import edgeway.demo.shop
from conftest import delete_nats_streams, held_ports, require
from edgeway.demo.shop.common.settings import ShopSettings
from edgeway.demo.shop.inventory.app import create_app as inventory_app
from edgeway.gateway.config.loader import load_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket

pytestmark = pytest.mark.timeout(90)

EDGES = Path(edgeway.demo.shop.__file__).resolve().parent / "edges"
SKUS = ("CUP-01", "BEA-01", "NOPE-1")  # the last has no stock record


@pytest.fixture
async def signer() -> AsyncIterator[Issuer]:
    async with issuer() as found:
        yield found


@contextlib.asynccontextmanager
async def inventory(tmp_path: Path, signer: Issuer) -> AsyncIterator[tuple[int, int, httpx.AsyncClient]]:
    """Inventory on real ports: (HTTP port, gRPC port, an HTTP client of it)."""
    require("nats")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    http_port, grpc_port = held_ports(2)
    settings = ShopSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/inventory.db",
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:4222",
        bus_prefix=prefix,
        token_audience=None,
        grpc_port=grpc_port,
        **identity_settings(signer),
    )
    app = inventory_app(settings)
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


@contextlib.asynccontextmanager
async def stubs() -> AsyncIterator[int]:
    """catalog's ``/products/<sku>`` and legacy's ``/reviews/<sku>`` on one port."""

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                line, _, _ = await read_request(r)
                kind, sku = line.split(b" ")[1].decode().strip("/").split("/")
                if kind == "products":
                    data = {"sku": sku, "name": f"the {sku}", "price_cents": 1200, "category": "c"}
                else:
                    data = {"reviews": [], "average": 4.5, "count": 2}
                body = orjson.dumps(data)
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


@contextlib.asynccontextmanager
async def bff(
    tmp_path: Path, screen: str, transport: str, ports: dict[str, int], jwks_url: str
) -> AsyncIterator[int]:
    """A gateway with the shop's route file for ``screen`` (web, mobile) and ``transport``, as the
    BFF includes it for EDGEWAY_INSIDE_TRANSPORT, and the services at the given ports."""
    config = tmp_path / f"{screen}-{transport}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "include": [str(EDGES / f"product-{screen}.{transport}.yaml")],
                "access_log": {"enabled": False},
                # the mobile card reads a token when one is sent
                "auth": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": "edgeway"},
                "services": {
                    "catalog": {"instances": [f"http://127.0.0.1:{ports['stubs']}"]},
                    "legacy": {"instances": [f"http://127.0.0.1:{ports['stubs']}"]},
                    "inventory": {"instances": [f"http://127.0.0.1:{ports['http']}"]},
                    # the kit registers grpc://; the gateway's services are written http://
                    "inventory-grpc": {"instances": [f"http://127.0.0.1:{ports['grpc']}"]},
                },
            }
        )
    )
    gw = Gateway(load_config(config, {}), AccessLog("bff", io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


async def _screens(
    tmp_path: Path, screen: str, path: str, ports: dict[str, int], jwks_url: str
) -> dict[str, list[Any]]:
    """Each transport's answers for every SKU: (status, body)."""
    found: dict[str, list[Any]] = {}
    for transport in ("http", "grpc"):
        async with (
            bff(tmp_path, screen, transport, ports, jwks_url) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            answers = [await client.get(path.format(sku=sku)) for sku in SKUS]
        found[transport] = [(a.status_code, a.json()) for a in answers]
    return found


def _failed_calls(answers: list[Any]) -> list[list[str]]:
    """Which calls each answer says failed; their reasons are the transport's own (inventory's
    404 over HTTP, no level for the SKU over gRPC), the page is the same."""
    return [sorted(body.pop("_meta", {}).get("errors", {})) for _, body in answers]


async def test_the_product_screens_show_the_same_stock_over_grpc_as_over_http(
    tmp_path: Path, signer: Issuer
) -> None:
    async with inventory(tmp_path, signer) as (http_port, grpc_port, client), stubs() as stub_port:
        admin = {"authorization": f"Bearer {signer.token('ops', roles=['admin'])}"}
        # 0 available: proto3 JSON would leave the field out; the call prints it, as JSON does
        emptied = await client.put("/stock/BEA-01", json={"on_hand": 0}, headers=admin)
        assert emptied.status_code == 200, emptied.text
        cups = (await client.get("/stock/CUP-01")).json()["available"]
        assert cups > 0
        ports = {"http": http_port, "grpc": grpc_port, "stubs": stub_port}
        web = await _screens(tmp_path, "web", "/api/products/{sku}", ports, signer.jwks_url)
        mobile = await _screens(tmp_path, "mobile", "/m/products/{sku}", ports, signer.jwks_url)
    for screens in (web, mobile):
        assert _failed_calls(screens["grpc"]) == _failed_calls(screens["http"]) == [[], [], ["stock"]]
    assert web["grpc"] == web["http"]
    assert [body["stock"] for _, body in web["grpc"]] == [
        {"available": cups},
        {"available": 0},
        {"available": None},  # no stock record: the optional call's fallback, either way
    ]
    assert [status for status, _ in web["grpc"]] == [200, 200, 200]
    assert mobile["grpc"] == mobile["http"]
    assert [body["in_stock"] for _, body in mobile["grpc"]] == [cups, 0, None]


async def test_the_grpc_stock_call_really_goes_over_grpc(tmp_path: Path, signer: Issuer) -> None:
    """With inventory's HTTP port pointing nowhere, the grpc screen still has the stock and the
    http screen falls back: the figures came over gRPC."""
    async with inventory(tmp_path, signer) as (_, grpc_port, client), stubs() as stub_port:
        cups = (await client.get("/stock/CUP-01")).json()["available"]
        (nowhere,) = held_ports(1)
        ports = {"http": nowhere, "grpc": grpc_port, "stubs": stub_port}
        web = await _screens(tmp_path, "web", "/api/products/{sku}", ports, signer.jwks_url)
    assert web["grpc"][0][1]["stock"] == {"available": cups}
    assert web["http"][0][1]["stock"] == {"available": None}
