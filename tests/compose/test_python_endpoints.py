"""Python endpoints end to end: modules written to a temp dir, imported by the config check,
served by a real gateway over sockets, calling real services through ``req.services``."""

from __future__ import annotations

import asyncio
import logging
import textwrap
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from compose_helpers import JsonService, Reply, Seen, gateway, request, services

from edgeway.gateway.actions.endpoints.registry import EndpointRegistrationError, endpoint
from edgeway.gateway.config import ConfigError, validate_config


def write_module(tmp_path: Path, source: str) -> tuple[str, str]:
    """A module with a unique name; ``{u}`` in the source is a unique suffix for endpoint names."""
    suffix = uuid.uuid4().hex[:8]
    name = f"bff_{suffix}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source).replace("{u}", suffix))
    return name, suffix


def endpoint_config(
    tmp_path: Path,
    module: str,
    routes: list[dict[str, Any]],
    running: dict[str, JsonService] | None = None,
    **service: Any,
) -> dict[str, Any]:
    return {
        "name": "py-test",
        "python": {"modules": [module], "paths": [str(tmp_path)]},
        "services": {n: {"instances": [s.url], **service} for n, s in (running or {}).items()},
        "routes": routes,
    }


HOME = """
    import asyncio
    from edgeway.bff import endpoint

    @endpoint("GET", "/home/{user}", name="home_{u}")
    async def home(req):
        catalog, profile = await asyncio.gather(
            req.services.catalog.get("/featured", params={"limit": req.query.get("limit", "3")}),
            req.services["profile"].get(f"/users/{req.path_params['user']}"),
        )
        return {
            "user": profile.raise_for_status().json(),
            "featured": catalog.json()["items"],
            "lang": req.headers.get("accept-language"),
            "request_id": req.request_id,
            "greeting": req.options["greeting"],
            "identity": req.identity,
            "method": req.method,
            "path": req.path,
        }
"""


async def test_an_endpoint_composes_service_calls_with_the_requests_context(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, HOME)
    async with services(
        catalog=lambda s: {"items": [{"sku": "a"}][: int(s.query["limit"][0])]},
        profile=lambda s: {"name": s.path.rsplit("/", 1)[1]},
    ) as svc:
        cfg = endpoint_config(
            tmp_path,
            module,
            [
                {
                    "match": {"path": "/home/{user}", "methods": ["GET"]},
                    "endpoint": {"name": f"home_{u}", "options": {"greeting": "hi"}},
                }
            ],
            svc,
        )
        async with gateway(cfg) as (port, _):
            answer = await request(
                port,
                "GET",
                "/home/ada?limit=1",
                headers={"x-request-id": "r-42", "authorization": "Bearer t", "accept-language": "de"},
            )
            seen = [svc["catalog"].seen[0], svc["profile"].seen[0]]
    assert answer.status == 200
    assert answer.json() == {
        "user": {"name": "ada"},
        "featured": [{"sku": "a"}],
        "lang": "de",
        "request_id": "r-42",
        "greeting": "hi",
        "identity": None,
        "method": "GET",
        "path": "/home/ada",
    }
    trace = answer.headers["traceparent"].split("-")[1]
    for call in seen:
        assert call.headers["x-request-id"] == "r-42"
        assert call.headers["authorization"] == "Bearer t"
        assert call.headers["accept-language"] == "de"
        assert call.headers["traceparent"].split("-")[1] == trace
    assert seen[0].headers["traceparent"] != seen[1].headers["traceparent"]
    assert seen[0].query == {"limit": ["1"]}


async def test_a_response_object_sets_status_headers_and_body_and_none_is_204(tmp_path: Path) -> None:
    module, u = write_module(
        tmp_path,
        """
        from edgeway.bff import Response, endpoint

        @endpoint(name="create_{u}")
        async def create(req):
            order = await req.json()
            created = await req.services.orders.post("/orders", json=order)
            return Response(json=created.json(), status=201, headers={"Location": "/orders/1"})

        @endpoint(name="text_{u}")
        async def text(req):
            return Response(content=b"plain", media_type="text/plain", headers={"content-length": "99"})

        @endpoint(name="empty_{u}")
        async def empty(req):
            return None
        """,
    )
    async with services(orders=lambda s: Reply(201, {"id": 1, "got": s.json()})) as svc:
        cfg = endpoint_config(
            tmp_path,
            module,
            [
                {"match": {"path": "/orders", "methods": ["POST"]}, "endpoint": {"name": f"create_{u}"}},
                {"match": {"path": "/text"}, "endpoint": {"name": f"text_{u}"}},
                {"match": {"path": "/empty"}, "endpoint": {"name": f"empty_{u}"}},
            ],
            svc,
        )
        async with gateway(cfg) as (port, _):
            created = await request(port, "POST", "/orders", body=b'{"sku": "a"}')
            text = await request(port, "GET", "/text")
            empty = await request(port, "GET", "/empty")
            assert svc["orders"].seen[0].headers["content-type"] == "application/json"
    assert created.status == 201
    assert created.headers["location"] == "/orders/1"
    assert created.json() == {"id": 1, "got": {"sku": "a"}}
    assert (text.status, text.body, text.headers["content-type"]) == (200, b"plain", "text/plain")
    assert text.headers["content-length"] == "5"  # framing is the gateway's
    assert (empty.status, empty.body) == (204, b"")


ERRORS = """
    from edgeway.bff import Rejection, endpoint

    @endpoint(name="reject_{u}")
    async def reject(req):
        raise Rejection(409, "Conflict", "already there", headers=[(b"retry-after", b"3")], code="dup")

    @endpoint(name="crash_{u}")
    async def crash(req):
        return {"n": 1 / 0}

    @endpoint(name="lost_{u}")
    async def lost(req):
        (await req.services.orders.get("/orders/9")).raise_for_status()

    @endpoint(name="broken_{u}")
    async def broken(req):
        (await req.services.orders.get("/broken")).raise_for_status()

    @endpoint(name="slow_{u}")
    async def slow(req):
        await req.services.orders.get("/slow", timeout=0.1)

    @endpoint(name="nosuch_{u}")
    async def nosuch(req):
        await req.services.nosuch.get("/")

    @endpoint(name="body_{u}")
    async def body(req):
        return await req.json()
"""


def orders(seen: Seen) -> Any:
    if seen.path == "/orders/9":
        return Reply(404, {"title": "Not Found", "detail": "no order 9", "code": "missing"})
    if seen.path == "/broken":
        return Reply(500, {"detail": "internal"})
    return Reply(body={}, delay=1.0)


async def test_failures_become_problems_with_the_right_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module, u = write_module(tmp_path, ERRORS)
    names = ("reject", "crash", "lost", "broken", "slow", "nosuch", "body")
    async with services(orders=orders) as svc:
        cfg = endpoint_config(
            tmp_path,
            module,
            [{"match": {"path": f"/{n}"}, "endpoint": {"name": f"{n}_{u}"}} for n in names],
            svc,
        )
        caplog.set_level(logging.ERROR, "edgeway.gateway.actions.endpoints")
        async with gateway(cfg) as (port, log):
            answers = {
                n: await request(
                    port, "GET" if n != "body" else "POST", f"/{n}", body=b"{x" if n == "body" else None
                )
                for n in names
            }
            await asyncio.sleep(0.05)
    reject = answers["reject"]
    assert (reject.status, reject.headers["retry-after"]) == (409, "3")
    assert reject.json()["code"] == "dup"
    crash = answers["crash"]
    assert crash.status == 500
    assert crash.json()["detail"] == f"endpoint 'crash_{u}' failed"
    assert "division" not in crash.body.decode()  # the exception stays in the log
    lines = [orjson.loads(line) for line in log.getvalue().splitlines()]
    logged = next(line for line in lines if line["path"] == "/crash")
    assert logged["error"] == "ZeroDivisionError: division by zero"
    assert "1 / 0" in logged["traceback"]
    assert logged["endpoint"] == f"{module}.crash"
    assert any("crash" in record.getMessage() for record in caplog.records)
    lost = answers["lost"]
    assert (lost.status, lost.json()["detail"], lost.json()["code"]) == (404, "no order 9", "missing")
    assert lost.json()["service"] == "orders"
    assert answers["broken"].status == 502
    assert answers["slow"].status == 504
    nosuch = answers["nosuch"]
    assert nosuch.status == 500
    nosuch_line = next(line for line in lines if line["path"] == "/nosuch")
    assert "no service 'nosuch' in this gateway's config (services: orders)" in nosuch_line["error"]
    assert answers["body"].status == 400


def test_unknown_endpoint_names_are_config_errors_with_a_hint(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, HOME)
    cfg = endpoint_config(
        tmp_path,
        module,
        [{"match": {"path": "/home/{user}", "methods": ["GET"]}, "endpoint": {"name": f"hme_{u}"}}],
    )
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    assert str(caught.value) == (
        f"<config>: routes[0].endpoint.name: no endpoint 'hme_{u}' in {module} "
        f"(did you mean 'home_{u}'? registered: home_{u})"
    )


def test_a_module_that_fails_to_import_is_named_with_the_failing_line(tmp_path: Path) -> None:
    module, _ = write_module(tmp_path, "import json\nraise RuntimeError('no config here')\n")
    cfg = endpoint_config(tmp_path, module, [])
    cfg["python"]["modules"].append("no_such_module_xyz")
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    issues = [f"{i.key_path}: {i.message}" for i in caught.value.issues]
    assert issues[0].startswith(
        f"python.modules[0]: cannot import '{module}': RuntimeError: no config here (at "
    )
    assert issues[0].endswith(f"{module}.py:2)")
    assert issues[1] == (
        "python.modules[1]: cannot import 'no_such_module_xyz': ModuleNotFoundError: "
        "No module named 'no_such_module_xyz'"
    )


def test_the_declared_method_and_path_must_be_the_routes(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, HOME)
    cfg = endpoint_config(
        tmp_path, module, [{"match": {"path": "/home/{id}"}, "endpoint": {"name": f"home_{u}"}}]
    )
    with pytest.raises(ConfigError) as caught:
        validate_config(cfg)
    issues = [f"{i.key_path}: {i.message}" for i in caught.value.issues]
    assert issues == [
        f"routes[0].match.path: endpoint 'home_{u}' ({module}.home) is declared for path '/home/{{user}}', "
        "not '/home/{id}'",
        f"routes[0].match.methods: endpoint 'home_{u}' ({module}.home) is declared for GET; the route takes "
        "any method: set methods: [GET]",
    ]


def test_an_endpoint_route_needs_the_python_section() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"routes": [{"match": {"path": "/x"}, "endpoint": {"name": "x"}}]})
    assert "routes[0].endpoint: a Python endpoint needs `python: {modules: [...]}`" in str(caught.value)


def test_registration_refuses_sync_functions_and_taken_names() -> None:
    name = f"taken_{uuid.uuid4().hex[:8]}"

    def sync(req: Any) -> None:
        return None

    with pytest.raises(EndpointRegistrationError, match="must be an 'async def' function"):
        endpoint(name=name)(sync)  # type: ignore[type-var]  # the wrong kind of function, on purpose

    async def first(req: Any) -> None:
        return None

    async def second(req: Any) -> None:
        return None

    endpoint(name=name)(first)
    endpoint(name=name)(first)  # the same function again: fine (a reload)
    with pytest.raises(EndpointRegistrationError, match="registered twice"):
        endpoint(name=name)(second)


def test_the_bare_decorator_uses_the_function_name() -> None:
    from edgeway.gateway.actions.endpoints.registry import registered

    async def bare_decorated_endpoint_for_test(req: Any) -> None:
        return None

    assert endpoint(bare_decorated_endpoint_for_test) is bare_decorated_endpoint_for_test
    spec = registered("bare_decorated_endpoint_for_test")
    assert spec is not None
    assert (spec.method, spec.path) == (None, None)
