from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import nats
import orjson
import pytest
from fastapi import FastAPI
from servers import serve

from conftest import bound_socket, require
from edgeway.discovery.registry import Registry
from edgeway.observability.logs import setup_logging
from edgeway.service import Kit, ServiceSettings, create_app, kit_of

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_edgeway_json_handler", False):
            root.removeHandler(handler)
    root.setLevel(level)


async def test_application_logs_carry_the_request_id_of_their_request(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app("orders", settings=ServiceSettings(log_level="debug"))

    @app.get("/work")
    async def work() -> dict[str, bool]:
        logging.getLogger("orders.handler").info("working")
        return {"ok": True}

    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        await http.get("/work", headers={"X-Request-ID": "first"})
        await http.get("/work", headers={"X-Request-ID": "second"})
    entries = [orjson.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert all(e["service"] == "orders" for e in entries)
    handler_lines = [(e["request_id"], e["message"]) for e in entries if e["logger"] == "orders.handler"]
    assert handler_lines == [("first", "working"), ("second", "working")]
    access = [e for e in entries if e.get("kind") == "access"]
    assert [(e["request_id"], e["status"], e["route"]) for e in access] == [
        ("first", 200, "/work"),
        ("second", 200, "/work"),
    ]
    assert all(len(e["trace_id"]) == 32 and len(e["span_id"]) == 16 for e in access)
    setup_logging("orders", "info")  # restore a sane level for the fixture to remove


async def test_user_lifespan_runs_inside_and_readiness_follows_it() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append(f"start ready={kit_of(app).health.started}")
        yield
        events.append(f"stop stopping={kit_of(app).health.stopping}")

    app = create_app("orders", settings=ServiceSettings(), lifespan=lifespan, configure_logging=False)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health/ready")).status_code == 200
    assert events == ["start ready=False", "stop stopping=True"]


async def test_kit_dependency_gives_flags_and_clients(tmp_path: Path) -> None:
    peer = create_app("inventory", settings=ServiceSettings(), configure_logging=False)

    @peer.get("/stock")
    async def stock() -> dict[str, int]:
        return {"count": 5}

    async with serve(peer) as peer_url:
        settings = ServiceSettings(services={"inventory": [peer_url]})
        app = create_app("orders", settings=settings, configure_logging=False)

        @app.get("/summary")
        async def summary(kit: Kit) -> dict[str, object]:
            response = await kit.client("inventory").get("/stock")
            return {"stock": response.json()["count"], "flag": kit.flags.enabled("x")}

        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            body = (await http.get("/summary")).json()
    assert body == {"stock": 5, "flag": False}


async def test_service_registers_on_start_and_deregisters_on_shutdown(tmp_path: Path) -> None:
    require("nats")
    bucket = f"reg_{uuid.uuid4().hex[:12]}"
    cfg_bucket = f"cfg_{uuid.uuid4().hex[:12]}"
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    kv = await js.create_key_value(bucket=cfg_bucket)
    await kv.put("flags.new-ui", b"true")
    await kv.put("greeting", b'"hi"')
    registry = Registry(nc, bucket=bucket, ttl=5)
    await registry.open()
    sock = bound_socket()  # the app advertises its URL as it starts
    port = sock.getsockname()[1]
    settings = ServiceSettings(
        advertise_url=f"http://127.0.0.1:{port}",
        registry_bucket=bucket,
        registry_ttl=5,
        config_bucket=cfg_bucket,
        config_cache_dir=tmp_path,
        shutdown_grace=0.0,
    )
    app = create_app("billing", settings=settings, configure_logging=False)

    @app.get("/greeting")
    async def greeting(kit: Kit) -> dict[str, object]:
        assert kit.config is not None
        return {"greeting": kit.config.get("greeting"), "new_ui": kit.flags.enabled("new-ui")}

    try:
        async with serve(app, sock) as url, httpx.AsyncClient(base_url=url) as http:
            instances = await registry.lookup("billing")
            assert [i.url for i in instances] == [f"http://127.0.0.1:{port}"]
            assert (await http.get("/greeting")).json() == {"greeting": "hi", "new_ui": True}
            ready = (await http.get("/health/ready")).json()
            assert {"name": "config", "status": "ok"}.items() <= ready["checks"][0].items()
            # another service finds it through the kit's registry-backed discovery
            assert await kit_of(app).discovery.resolve("billing") == [f"http://127.0.0.1:{port}"]
        async with asyncio.timeout(5):
            assert await registry.lookup("billing") == []
    finally:
        await js.delete_key_value(bucket)
        await js.delete_key_value(cfg_bucket)
        await nc.close()


async def test_an_instance_registers_only_once_its_own_start_up_is_done() -> None:
    # Peers and gateways that find an instance still starting cannot connect to it, and a
    # gateway's failed first health check keeps it out for two more intervals.
    require("nats")
    bucket = f"reg_{uuid.uuid4().hex[:12]}"
    nc = await nats.connect(NATS_URL)
    registry = Registry(nc, bucket=bucket, ttl=5)
    await registry.open()
    seen_while_starting: list[list[str]] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.sleep(0.3)  # a database, a bus, hooks
        seen_while_starting.append([i.url for i in await registry.lookup("billing")])
        yield

    sock = bound_socket()
    port = sock.getsockname()[1]
    settings = ServiceSettings(
        advertise_url=f"http://127.0.0.1:{port}", registry_bucket=bucket, registry_ttl=5, shutdown_grace=0.0
    )
    app = create_app("billing", settings=settings, lifespan=lifespan, configure_logging=False)
    try:
        async with serve(app, sock):
            assert [i.url for i in await registry.lookup("billing")] == [f"http://127.0.0.1:{port}"]
        assert seen_while_starting == [[]]
    finally:
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()


async def test_start_up_freezes_the_heap_it_leaves_after_one_collection() -> None:
    made_at_start: list[object] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        made_at_start.append({"a start-up object": [1, 2, 3]})
        yield

    before = gc.get_freeze_count()
    app = create_app(
        "orders", settings=ServiceSettings(gc_freeze=True), lifespan=lifespan, configure_logging=False
    )
    try:
        async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health/ready")).status_code == 200
            assert gc.get_freeze_count() > before
            # Frozen objects are in no generation: a collection of the oldest one no longer sees them.
            assert not any(o is made_at_start[0] for o in gc.get_objects(generation=2))
    finally:
        gc.unfreeze()  # let this test worker collect them again


async def test_the_heap_is_left_alone_when_gc_freeze_is_off() -> None:
    gc.unfreeze()
    app = create_app("orders", settings=ServiceSettings(gc_freeze=False), configure_logging=False)
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/health/ready")).status_code == 200
        assert gc.get_freeze_count() == 0
