from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from edgeway.gateway.process.reload import ReloadRefused, request_reload
from live_gateway import (
    Client,
    admin_once,
    backends,
    gateway_config,
    once,
    ports,
    route,
    service,
    serving,
    write,
)


async def test_new_requests_take_the_new_routes_on_the_same_connection(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a", "b") as be:
        services = {"a": service(be["a"]), "b": service(be["b"])}
        write(cfg, gateway_config(port, admin, services, [route("/a/**", "a", "1")]))
        async with serving(cfg) as server:
            client = await Client.connect(port)
            first = await client.get("/a/x")
            assert (first.status, first.headers["x-config"], first.body) == (200, "1", b"a /a/x")
            assert (await client.get("/b/x")).status == 404
            write(
                cfg,
                gateway_config(port, admin, services, [route("/a/**", "a", "2"), route("/b/**", "b", "2")]),
            )
            result = await request_reload("127.0.0.1", admin)
            assert result["status"] == "applied"
            assert result["generation"] == 2
            # The same keep-alive connection, now on the new routes.
            again = await client.get("/a/x")
            assert (again.status, again.headers["x-config"]) == (200, "2")
            assert (await client.get("/b/y")).body == b"b /b/y"
            assert not client.closed
            await client.close()
            assert server.gateway.config.routes[1].match.path == "/b/**"


async def test_a_request_in_flight_finishes_on_the_old_route(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        services = {"a": service(be["a"])}
        write(cfg, gateway_config(port, admin, services, [route("/**", "a", "old")]))
        async with serving(cfg):
            slow = asyncio.create_task(once(port, "GET", "/slow/1"))
            await asyncio.wait_for(be["a"].slow_started.wait(), 5)
            write(cfg, gateway_config(port, admin, services, [route("/**", "a", "new")]))
            await request_reload("127.0.0.1", admin)
            assert (await once(port, "GET", "/fast")).headers["x-config"] == "new"
            assert not slow.done()
            be["a"].release.set()
            finished = await slow
            assert (finished.status, finished.headers["x-config"], finished.body) == (
                200,
                "old",
                b"a /slow/1",
            )


async def test_unchanged_services_keep_their_cluster_and_connections(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a", "b", "b2") as be:
        services = {"a": service(be["a"]), "b": service(be["b"])}
        write(
            cfg, gateway_config(port, admin, services, [route("/a/**", "a", "1"), route("/b/**", "b", "1")])
        )
        async with serving(cfg) as server:
            client = await Client.connect(port)
            for _ in range(3):
                assert (await client.get("/a/x")).status == 200
                assert (await client.get("/b/x")).status == 200
            cluster_a, cluster_b = server.gateway.clusters["a"], server.gateway.clusters["b"]
            accepted_a = be["a"].accepted
            # b moves to another instance; a is untouched; a route changes.
            moved = {"a": service(be["a"]), "b": service(be["b2"])}
            write(
                cfg, gateway_config(port, admin, moved, [route("/a/**", "a", "2"), route("/b/**", "b", "2")])
            )
            result = await request_reload("127.0.0.1", admin)
            assert result["services_kept"] == ["a"]
            assert result["services_rebuilt"] == ["b"]
            assert server.gateway.clusters["a"] is cluster_a
            assert server.gateway.clusters["b"] is not cluster_b
            for _ in range(3):
                assert (await client.get("/a/x")).headers["x-config"] == "2"
                assert (await client.get("/b/x")).body == b"b2 /b/x"
            assert be["a"].accepted == accepted_a  # nothing reconnected to a
            assert cluster_a.endpoints[0].pool.open_connections >= 1
            # The old cluster of b is closed once the old config has drained.
            async with asyncio.timeout(5):
                while cluster_b.endpoints[0].pool.open_connections:
                    await asyncio.sleep(0.05)
            await client.close()


async def test_an_invalid_config_is_refused_and_the_running_one_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        write(cfg, gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")]))
        async with serving(cfg) as server:
            good = cfg.read_text()
            cfg.write_text(
                good.replace('"match": {', '"match": {"methodz": ["GET"], ', 1).replace(
                    '"service": "a"', '"service": "nope"', 1
                )
            )
            with (
                caplog.at_level(logging.ERROR, logger="edgeway.gateway.process.reload"),
                pytest.raises(ReloadRefused) as refused,
            ):
                await request_reload("127.0.0.1", admin)
            assert refused.value.status == 422
            body = refused.value.result
            assert body["outcome"] == "refused"
            assert body["generation"] == 1
            texts = [issue["text"] for issue in body["issues"]]
            assert any(t.startswith(f"{cfg}:") and "routes[0].match.methodz: unknown key" in t for t in texts)
            assert any("routes[0].proxy.service: unknown service 'nope'" in t for t in texts)
            line, column = body["issues"][0]["line"], body["issues"][0]["column"]
            assert isinstance(line, int)
            assert isinstance(column, int)
            assert any(f"{cfg}:{line}:{column}:" in r.getMessage() for r in caplog.records)
            # Still serving the old config.
            assert (await once(port, "GET", "/x")).headers["x-config"] == "1"
            assert server.reloader is not None
            assert server.reloader.generation == 1


async def test_unparsable_yaml_is_refused_with_its_place(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        write(cfg, gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")]))
        async with serving(cfg):
            cfg.write_text("name: x\nroutes: [\n")
            with pytest.raises(ReloadRefused) as refused:
                await request_reload("127.0.0.1", admin)
            assert refused.value.result["issues"][0]["file"] == str(cfg)
            assert (await once(port, "GET", "/x")).status == 200


async def test_changes_that_need_a_restart_are_refused_by_key(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")])
        write(cfg, config)
        async with serving(cfg):
            other = ports()[0]
            write(cfg, {**config, "listen": {"port": other}, "workers": 2, "limits": {"max_headers": 10}})
            with pytest.raises(ReloadRefused) as refused:
                await request_reload("127.0.0.1", admin)
            keys = {issue["key"] for issue in refused.value.result["issues"]}
            assert keys == {"listen.port", "workers", "limits.max_headers"}
            assert "restart" in refused.value.result["issues"][0]["message"]
            assert (await once(port, "GET", "/x")).headers["x-config"] == "1"


async def test_the_file_watch_reloads_on_a_content_change_only(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")])
        config["reload"] = {"watch": True, "interval": "50ms"}
        write(cfg, config)
        async with serving(cfg) as server:
            assert server.reloader is not None
            os.utime(cfg)  # touched, same content
            await asyncio.sleep(0.5)
            assert server.reloader.generation == 1
            config["routes"] = [route("/**", "a", "2")]
            write(cfg, config)
            async with asyncio.timeout(5):
                while (await once(port, "GET", "/x")).headers["x-config"] != "2":
                    await asyncio.sleep(0.05)
            assert server.reloader.generation == 2


async def test_the_file_watch_follows_included_files(tmp_path: Path) -> None:
    port, admin = ports()
    cfg, routes_file = tmp_path / "gw.yaml", tmp_path / "routes.yaml"
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [])
        config["reload"] = {"watch": True, "interval": "50ms"}
        config["include"] = ["routes.yaml"]
        write(cfg, config)
        write(routes_file, {"routes": [route("/**", "a", "1")]})
        async with serving(cfg):
            assert (await once(port, "GET", "/x")).headers["x-config"] == "1"
            write(routes_file, {"routes": [route("/**", "a", "included-2")]})
            async with asyncio.timeout(5):
                while (await once(port, "GET", "/x")).headers["x-config"] != "included-2":
                    await asyncio.sleep(0.05)


async def test_requests_still_running_after_the_drain_timeout_finish(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a", "b") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")])
        config["reload"] = {"watch": False, "drain_timeout": "100ms"}
        write(cfg, config)
        async with serving(cfg) as server:
            old_cluster = server.gateway.clusters["a"]
            slow = asyncio.create_task(once(port, "GET", "/slow/x"))
            await asyncio.wait_for(be["a"].slow_started.wait(), 5)
            config["services"] = {"a": service(be["b"])}
            write(cfg, config)
            await request_reload("127.0.0.1", admin)
            await asyncio.sleep(0.4)  # past the drain timeout: the old config was stopped...
            assert old_cluster.draining == old_cluster.endpoints
            assert not old_cluster.endpoints[0].pool.closed  # ...its pool waits for the request
            be["a"].release.set()
            assert (await slow).body == b"a /slow/x"
            async with asyncio.timeout(2):
                while not old_cluster.endpoints[0].pool.closed:
                    await asyncio.sleep(0.05)


async def test_reload_without_a_file_is_a_conflict(tmp_path: Path) -> None:
    from edgeway.gateway.config import validate_config
    from edgeway.gateway.process.serve import GatewayServer

    port, admin = ports()
    async with backends("a") as be:
        server = GatewayServer(
            validate_config(gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")]))
        )
        await server.start()
        try:
            answer = await admin_once(admin, "POST", "/reload")
            assert answer.status == 409
            assert (await admin_once(admin, "GET", "/reload")).status == 405
        finally:
            await server.shutdown()


async def test_metrics_carry_on_across_a_reload(tmp_path: Path) -> None:
    port, admin = ports()
    cfg = tmp_path / "gw.yaml"
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")])
        write(cfg, config)
        async with serving(cfg) as server:
            metrics = server.gateway.env.metrics
            reloads = metrics.counter("test_reloads_total", "reloads seen by this test")
            reloads.inc()
            level = [1.0]
            metrics.gauge("test_level", "a level read at scrape time", function=lambda: level[0])
            write(cfg, {**config, "routes": [route("/**", "a", "2")]})
            await request_reload("127.0.0.1", admin)
            assert server.gateway.env.metrics is metrics
            # The new config's components re-register their gauges: the new one is read.
            metrics.gauge("test_level", "a level read at scrape time", function=lambda: 7.0)
            text = (await admin_once(admin, "GET", "/metrics")).body.decode()
            assert "test_reloads_total 1.0" in text
            assert "test_level 7.0" in text


def _configmap_version(mount: Path, name: str, files: dict[str, dict[str, Any]]) -> None:
    """One version of a ConfigMap volume as the kubelet writes it: a hidden timestamped directory
    holding the files, published by pointing ``..data`` at it (rename over the old link:
    atomic), the old directory removed."""
    version = mount / name
    version.mkdir()
    for file, content in files.items():
        write(version / file, content)
    link = mount / "..data_tmp"
    link.symlink_to(name)
    old = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    os.replace(link, mount / "..data")
    for file in files:
        if not (mount / file).is_symlink():
            (mount / file).symlink_to(Path("..data") / file)
    if old is not None:
        for stale in (mount / old).iterdir():
            stale.unlink()
        (mount / old).rmdir()


async def test_the_file_watch_sees_a_kubernetes_configmap_swap(tmp_path: Path) -> None:
    """Watched by realpath, the gateway kept statting the deleted old target and never
    reloaded; the path the user gave must be resolved again at each poll, includes too."""
    port, admin = ports()
    mount = tmp_path / "config"
    mount.mkdir()
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [])
        config["reload"] = {"watch": True, "interval": "50ms"}
        config["include"] = ["routes.yaml"]
        routes = {"routes": [route("/**", "a", "1")]}
        _configmap_version(mount, "..2026_12_07_1", {"gateway.yaml": config, "routes.yaml": routes})
        async with serving(mount / "gateway.yaml") as server:
            assert server.reloader is not None
            assert (await once(port, "GET", "/x")).headers["x-config"] == "1"
            # Only the included file changes: the route must still follow.
            routes = {"routes": [route("/**", "a", "2")]}
            _configmap_version(mount, "..2026_12_07_2", {"gateway.yaml": config, "routes.yaml": routes})
            async with asyncio.timeout(5):
                while (await once(port, "GET", "/x")).headers["x-config"] != "2":
                    await asyncio.sleep(0.05)
            config["routes"] = [route("/b/**", "a", "3")]
            _configmap_version(mount, "..2026_12_07_3", {"gateway.yaml": config, "routes.yaml": routes})
            async with asyncio.timeout(5):
                while (await once(port, "GET", "/b/x")).headers["x-config"] != "3":
                    await asyncio.sleep(0.05)
            assert server.reloader.generation == 3
