"""What a process imports at start-up: only what it uses (docs/cluster-rehearsal.md, finding 15).

Each probe runs in a fresh interpreter and reads ``sys.modules``; no clock is involved. A module
named here as absent cost tens of milliseconds of CPU per start before it was deferred
(docs/benchmarks.md, "Start-up imports"): dnspython without DNS discovery, the other database's
SQL dialect in a read copy, FastAPI, SQLAlchemy, grpc and the NATS client through
``edgeway --help``, cryptography's x509 through a gateway without TLS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVICES = (
    "edgeway.demo.shop.orders.app",
    "edgeway.demo.shop.catalog.app",
    "edgeway.demo.shop.inventory.app",
    "edgeway.demo.shop.payments.app",
    "edgeway.demo.shop.notifications.app",
    "edgeway.security_service",
)

# DNS discovery: imported by no kit service that does not ask for it
NOT_IN_SERVICES = ("dns",)


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
def test_a_kit_service_does_not_import_dns_discovery(module: str) -> None:
    # The probe can fail: the service does import the discovery module that used to pull it in.
    assert _loaded(f"import {module}", ("edgeway.service.discovery",)) == ["edgeway.service.discovery"]
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
    assert _loaded(code, ("cryptography", "sqlalchemy", "fastapi", "nats")) == []


def test_the_demo_gateway_built_does_not_import_x509() -> None:
    # The shop's gateway: JWT auth (httpx fetches the JWKS), NATS registry discovery, no TLS.
    config = Path(__file__).resolve().parents[2] / "src/edgeway/demo/shop/edges/gateway.yaml"
    code = (
        "from pathlib import Path\n"
        "from edgeway.gateway.config import load_config\n"
        "from edgeway.gateway.core.runtime import Gateway\n"
        f"Gateway(load_config(Path({str(config)!r})), None)\n"
    )
    assert _loaded(code, ("httpx", "nats.aio.transport")) == ["httpx", "nats.aio.transport"]
    assert _loaded(code, ("cryptography.x509",)) == []


def test_the_tls_names_stay_importable_from_certificates() -> None:
    from edgeway.pki import certificates, names

    assert certificates.covers is names.covers
    assert certificates.host_name is names.host_name
    assert certificates.uncovered is names.uncovered
