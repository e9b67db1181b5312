"""Every service answers what its OpenAPI document says, whatever a client sends.

Schemathesis generates requests from each service's own document — valid ones and invalid ones
— and sends them to the app in-process (ASGI, no sockets). Every answer must be documented: no
5xx, a status the operation declares, the content type and body schema it declares for that
status (``application/problem+json`` for every error). The number of examples per operation is
small and the generation derandomized, so the run is quick and the same every time; the
boundary values that once found 500s here (integers past 64 bits, ids that cannot go into a
header, nulls in PATCH bodies) are among the first a schema-driven generator tries.

The shop services trust the gateway's identity headers here (the caller is an admin, support and
service at once, so the checks reach the bodies); the security service gets an admin token.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from conftest import delete_nats_streams, require

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402
from schemathesis.python import asgi  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8}

_claims = base64.urlsafe_b64encode(orjson.dumps({"email": "fuzz@example.com"})).decode().rstrip("=")
GATEWAY_IDENTITY = {
    "X-Edgeway-Subject": "fuzzer",
    "X-Edgeway-Roles": "admin,support,service,customer",
    "X-Edgeway-Claims": _claims,
}


def fuzz(app: FastAPI, headers: Callable[[], dict[str, str]]) -> list[str]:
    """Run every operation of ``app``'s document; the failures, one line each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    fixed = headers()  # after the schema load, which started the app's lifespan
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():

            @settings(
                max_examples=examples,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                case.call_and_validate(headers=fixed, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                pass  # nothing to get wrong in this mode (an operation without inputs has no invalid ones)
            except (Exception, BaseExceptionGroup) as exc:  # every operation runs; all failures reported
                where = f"{operation.method.upper()} {operation.path} ({mode.value})"
                failures.append(f"{where}: {_describe(exc)}")
    return failures


def _describe(exc: BaseException) -> str:
    # A flaky case is reported as a group; what failed the first time is inside it.
    inner = getattr(exc, "exceptions", ())
    return str(exc) + "".join(f"\n  - {_describe(sub)}" for sub in inner)


@pytest.fixture
def stopping() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    # The ASGI transport keeps each app's lifespan running in its own loop thread until stopped.
    asgi.shutdown_lifespans()
    # The apps' start-up installed their JSON log handler: later tests on this worker expect none.
    root.handlers[:] = handlers
    root.setLevel(level)


SHOP = ["catalog", "inventory", "payments", "orders", "notifications", "profile"]


def _shop_app(name: str, tmp_path: Path, prefix: str) -> FastAPI:
    import importlib

    module = importlib.import_module(f"edgeway.demo.shop.{name}.app")
    from edgeway.demo.shop.common.settings import ShopSettings

    settings_class = getattr(module, f"{name.capitalize()}Settings", ShopSettings)
    settings = settings_class(
        database_url=f"sqlite+aiosqlite:///{tmp_path}/{name}.db",
        data_dir=tmp_path,
        nats_url="nats://127.0.0.1:4222",
        bus_prefix=prefix,
        trust_gateway_headers=True,
        shutdown_grace=0,
    )
    app: FastAPI = module.create_app(settings)
    return app


# An app's background work (e-mail jobs, the outbox relay: trace ids come from ``random``) runs on
# the transport's loop thread while the next case is generated; Hypothesis takes that for a
# strategy using ``random``. Nothing in a strategy does.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
@pytest.mark.parametrize("name", SHOP)
async def test_a_shop_service_answers_what_its_document_says(
    name: str, tmp_path: Path, stopping: None
) -> None:
    require("nats")
    import asyncio

    prefix = f"t{uuid.uuid4().hex[:10]}"
    app = _shop_app(name, tmp_path, prefix)
    try:
        # The ASGI transport blocks on its own loop thread: keep this test's loop out of its way.
        failures = await asyncio.to_thread(fuzz, app, lambda: dict(GATEWAY_IDENTITY))
    finally:
        await asyncio.to_thread(asgi.shutdown_lifespans)
        await delete_nats_streams(prefix)
    assert not failures, "\n\n".join(failures)


def test_the_security_service_answers_what_its_document_says(tmp_path: Path, stopping: None) -> None:
    from edgeway.security_service import SecuritySettings, create_security_app

    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "scopes: [catalog]\nroles: {admin: ['*']}\n"
        "users: [{username: root, password: root-password, roles: [admin]}]\n"
    )
    app = create_security_app(
        SecuritySettings(
            issuer="https://auth.test",
            audience=["shop"],
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'security.db'}",
            keys_path=tmp_path / "keys.json",
            seed_file=seed,
            argon2_time_cost=1,
            argon2_memory_cost=8,
            argon2_parallelism=1,
            throttle_base_delay=0.0,
        )
    )

    def admin() -> dict[str, str]:
        token = app.state.security.issuer.issue("root", roles=["admin"], scope=["catalog"]).token
        return {"Authorization": f"Bearer {token}"}

    failures = fuzz(app, admin)
    assert not failures, "\n\n".join(failures)
