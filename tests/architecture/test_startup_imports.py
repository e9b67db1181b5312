"""What a process imports at start-up: only what it uses (docs/cluster-rehearsal.md, finding 15).

Each probe runs in a fresh interpreter and reads ``sys.modules``; no clock is involved. A module
named here as absent cost tens of milliseconds of CPU per start before it was deferred
(docs/benchmarks.md, "Start-up imports"): aiohttp through nats-py's WebSocket transport, rich
and pygments through httpx's command line, FastAPI, SQLAlchemy, grpc and the NATS client through
``edgeway --help``, cryptography's x509 through a gateway without TLS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeway.bus.embedded import find_nats_server

SERVICES = (
    "edgeway.demo.shop.orders.app",
    "edgeway.demo.shop.catalog.app",
    "edgeway.demo.shop.inventory.app",
    "edgeway.demo.shop.payments.app",
    "edgeway.demo.shop.notifications.app",
    "edgeway.security_service",
)

# nats-py's ws:// transport, httpx's CLI, DNS discovery: imported by no kit service at start-up
NOT_IN_SERVICES = ("aiohttp", "multidict", "httpx._main", "rich", "pygments", "dns")


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    probe = (
        f"{code}\nimport sys\nprint(__import__('json').dumps([n for n in {names!r} if n in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=_env(), check=True
    )
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200"}


@pytest.mark.parametrize("module", SERVICES)
def test_a_kit_service_imports_neither_aiohttp_nor_a_cli(module: str) -> None:
    # The probe can fail: the service does import nats-py's transport and httpx, the modules
    # that used to pull the others in.
    assert _loaded(f"import {module}", ("nats.aio.transport", "httpx")) == ["nats.aio.transport", "httpx"]
    assert _loaded(f"import {module}", NOT_IN_SERVICES) == []


def test_a_read_copy_does_not_import_the_dialect_of_another_database() -> None:
    # The orders service keeps a read copy of the catalog (edgeway.bus.readcopy), which imported
    # both dialects for its upserts; the engine loads the one it uses. (The security service
    # defines its outbox table at import, whose index options name both dialects: it loads both.)
    assert _loaded("import edgeway.demo.shop.orders.app", ("sqlalchemy.dialects.sqlite",)) == []


def test_dns_discovery_is_imported_only_for_a_service_that_asks_for_it() -> None:
    code = (
        "import sys\n"
        "from edgeway.service.app import ServiceKit\n"
        "from edgeway.service.settings import ServiceSettings\n"
        "def kit(dns):\n"
        "    return ServiceKit('x', ServiceSettings(dns_discovery=dns), verifier=None, discovery=None,"
        " tracing=None)\n"
        "plain = kit(False)\n"
        "assert plain.discovery.name == 'static+env', plain.discovery.name\n"
        "assert 'dns' not in sys.modules\n"
        "asking = kit(True)\n"
        "assert asking.discovery.name == asking.grpc_discovery.name == 'static+env+dns'\n"
        "from edgeway.service.discovery import DnsDiscovery\n"  # the public name still resolves
        "from edgeway.discovery.dns import DnsDiscovery as Home\n"
        "assert DnsDiscovery is Home\n"
    )
    assert _loaded(code, ("dns",)) == ["dns"]


def test_deferred_modules_are_imported_when_used() -> None:
    code = (
        "import edgeway.demo.shop.orders.app\n"
        "import httpx, nats.aio.transport as t\n"
        "assert t.aiohttp and t.multidict\n"  # installed reads true, as the modules would
        "assert t.aiohttp.WSMsgType.BINARY and t.multidict.CIMultiDict\n"
        "import aiohttp, multidict\n"
        "assert t.aiohttp is aiohttp and t.multidict is multidict\n"  # the handles step aside
        "assert callable(httpx.main)\n"
    )
    assert _loaded(code, ("aiohttp", "multidict")) == ["aiohttp", "multidict"]


def test_httpx_command_line_still_runs_in_an_edgeway_process() -> None:
    code = "import edgeway.service, sys\nsys.argv = ['httpx', '--help']\nimport httpx\nhttpx.main()\n"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: httpx <URL> [OPTIONS]" in done.stdout


def test_nats_over_websocket_still_works_after_edgeway_is_imported(tmp_path: Path) -> None:
    # edgeway's own URLs are nats:// or tls:// (edgeway.bus.urls), but a process importing
    # edgeway may talk to a NATS WebSocket listener through nats-py: a real server, a real
    # round trip, aiohttp imported on the way.
    ports = tmp_path / "ports"
    ports.mkdir()
    conf = tmp_path / "ws.conf"
    conf.write_text('listen: "127.0.0.1:-1"\nwebsocket {\n  listen: "127.0.0.1:-1"\n  no_tls: true\n}\n')
    server = subprocess.Popen(
        [find_nats_server(), "-c", str(conf), "--ports_file_dir", str(ports)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ws_url = _ws_url(ports, server)
        code = (
            "import asyncio, sys\n"
            "import edgeway.discovery.natsconn, nats\n"
            "assert 'aiohttp' not in sys.modules\n"
            "async def main():\n"
            f"    nc = await nats.connect({ws_url!r}, connect_timeout=10)\n"
            "    sub = await nc.subscribe('probe')\n"
            "    await nc.publish('probe', b'over ws')\n"
            "    msg = await sub.next_msg(timeout=30)\n"
            "    await nc.close()\n"
            "    print(msg.data.decode())\n"
            "asyncio.run(main())\n"
        )
        assert _loaded(code, ("aiohttp",)) == ["aiohttp"]
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env()
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "over ws"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _ws_url(ports: Path, server: subprocess.Popen[bytes]) -> str:
    # A generous deadline: nats-server starts in milliseconds, the shared machine may be loaded.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert server.poll() is None, "nats-server exited at start-up"
        for found in ports.glob("*.ports"):
            text = found.read_text()
            if text.strip():
                url: str = json.loads(text)["websocket"][0]
                return url
        time.sleep(0.05)
    raise AssertionError("nats-server reported no WebSocket port within 30 s")


def test_edgeway_help_mounts_no_command() -> None:
    code = (
        "import sys\nsys.argv = ['edgeway', '--help']\n"
        "from edgeway.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    heavy = (
        "fastapi",
        "sqlalchemy",
        "grpc",
        "nats",
        "edgeway.security_service",
        "edgeway.saga",
        "edgeway.demo.plan",
    )
    assert _loaded(code, heavy) == []
    listed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env()
    )
    from edgeway.cli import _SUBCOMMANDS

    for name, _, help_text, _ in _SUBCOMMANDS:
        assert name in listed.stdout
        assert help_text in listed.stdout, name


def test_a_listed_command_invoked_from_the_listing_runs_the_real_one() -> None:
    # main() mounts a command whose name comes first; the listing's entry still dispatches.
    code = (
        "from edgeway.cli import build_listing\n"
        "try:\n    build_listing()(['version'])\nexcept SystemExit:\n    pass\n"
        "try:\n    build_listing()(['tls', '--help'])\nexcept SystemExit:\n    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert "0.1.0" in done.stdout
    assert "Commands" in done.stdout  # tls's own subcommands, from its mounted app


def test_a_gateway_without_tls_does_not_import_cryptography() -> None:
    code = "import edgeway.cli, edgeway.gateway.process.cli, edgeway.gateway.process.serve"
    assert _loaded(code, ("edgeway.gateway.process.serve", "edgeway.gateway.tls.redirect")) == [
        "edgeway.gateway.process.serve",
        "edgeway.gateway.tls.redirect",
    ]
    assert _loaded(code, ("cryptography", "aiohttp", "sqlalchemy", "fastapi", "nats")) == []


def test_the_demo_gateway_built_imports_neither_aiohttp_nor_rich() -> None:
    # The shop's gateway: JWT auth (httpx fetches the JWKS), NATS registry discovery, no TLS.
    config = Path(__file__).resolve().parents[2] / "src/edgeway/demo/shop/edges/gateway.yaml"
    code = (
        "from pathlib import Path\n"
        "from edgeway.gateway.config import load_config\n"
        "from edgeway.gateway.core.runtime import Gateway\n"
        f"Gateway(load_config(Path({str(config)!r})), None)\n"
    )
    assert _loaded(code, ("httpx", "nats.aio.transport")) == ["httpx", "nats.aio.transport"]
    assert _loaded(code, ("aiohttp", "rich", "pygments", "cryptography.x509")) == []


def test_the_tls_names_stay_importable_from_certificates() -> None:
    from edgeway.pki import certificates, names

    assert certificates.covers is names.covers
    assert certificates.host_name is names.host_name
    assert certificates.uncovered is names.uncovered
