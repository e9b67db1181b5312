"""Reload of a real `edgeway gateway` process: SIGHUP, and with workers, every worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from edgeway.gateway.process.reload import request_reload
from live_gateway import admin_once, backends, gateway_config, once, ports, route, service, write


@contextlib.asynccontextmanager
async def gateway_process(
    cfg: Path, admin: int, workers: int, log: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgeway.cli", "gateway", "--config", str(cfg), "--workers", str(workers)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # A bound for a hung start, not a speed check: workers start slowly on a loaded machine.
        try:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await admin_once(admin, "GET", "/healthz")).status == 200:
                            break
                    except OSError:
                        pass
                    assert proc.poll() is None, log.read_text()
                    await asyncio.sleep(0.1)
        except TimeoutError:
            raise AssertionError(f"the gateway did not become healthy in 60 s:\n{log.read_text()}") from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def generations(admin: int, workers: int) -> dict[int, int]:
    """pid -> config generation of every worker, asking on new connections until all answered."""
    seen: dict[int, int] = {}
    async with asyncio.timeout(10):
        while len(seen) < workers:
            health = (await admin_once(admin, "GET", "/healthz")).json()
            seen[health["pid"]] = health["config_generation"]
    return seen


async def wait_generation(admin: int, workers: int, generation: int) -> None:
    async with asyncio.timeout(10):
        while set((await generations(admin, workers)).values()) != {generation}:
            await asyncio.sleep(0.1)


async def test_sighup_reloads_and_an_invalid_file_is_refused_with_its_place(tmp_path: Path) -> None:
    port, admin = ports()
    cfg, log = tmp_path / "gw.yaml", tmp_path / "gw.log"
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")])
        write(cfg, config)
        async with gateway_process(cfg, admin, 1, log) as proc:
            assert (await once(port, "GET", "/x")).headers["x-config"] == "1"
            write(cfg, {**config, "routes": [route("/**", "a", "2")]})
            proc.send_signal(signal.SIGHUP)
            await wait_generation(admin, 1, 2)
            assert (await once(port, "GET", "/x")).headers["x-config"] == "2"
            cfg.write_text(cfg.read_text().replace('"services"', '"servicez"', 1))
            proc.send_signal(signal.SIGHUP)
            async with asyncio.timeout(10):
                while b"config reload refused" not in log.read_bytes():
                    await asyncio.sleep(0.1)
            assert (await once(port, "GET", "/x")).headers["x-config"] == "2"
            assert proc.poll() is None
    text = log.read_text()
    assert f"{cfg}:" in text
    assert "unknown key 'servicez'" in text


async def test_with_workers_signals_and_the_admin_api_reload_every_worker_once(tmp_path: Path) -> None:
    port, admin = ports()
    cfg, log = tmp_path / "gw.yaml", tmp_path / "gw.log"
    async with backends("a") as be:
        config = gateway_config(port, admin, {"a": service(be["a"])}, [route("/**", "a", "1")])
        write(cfg, config)
        async with gateway_process(cfg, admin, 2, log) as proc:
            pids = await generations(admin, 2)
            assert len(pids) == 2
            assert os.getpid() not in pids
            # SIGHUP to the parent: it forwards to every worker.
            write(cfg, {**config, "routes": [route("/**", "a", "2")]})
            proc.send_signal(signal.SIGHUP)
            await wait_generation(admin, 2, 2)
            answers = await asyncio.gather(*(once(port, "GET", "/x") for _ in range(20)))
            assert {a.headers["x-config"] for a in answers} == {"2"}
            # POST /reload lands on one worker; it tells the parent, which tells the others.
            write(cfg, {**config, "routes": [route("/**", "a", "3")]})
            result = await request_reload("127.0.0.1", admin)
            assert result["generation"] == 3
            await wait_generation(admin, 2, 3)
            await asyncio.sleep(0.5)
            assert set((await generations(admin, 2)).values()) == {3}  # nobody reloaded twice
            answers = await asyncio.gather(*(once(port, "GET", "/x") for _ in range(20)))
            assert {a.headers["x-config"] for a in answers} == {"3"}
            assert proc.poll() is None
