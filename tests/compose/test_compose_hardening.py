"""Composition hardening: what a service's answer, a client's input or an endpoint's
own code can put into an aggregate or a Python endpoint must never crash the answer, smuggle a
request, or overwrite what the gateway states.

Black-box over real sockets: a gateway in front of real JSON services (compose_helpers).
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from compose_helpers import JsonService, Reply, aggregate_config, gateway, request, services
from gateway_helpers import read_request

from edgeway.gateway.config import ConfigError, validate_config
from edgeway.http import json_input
from edgeway.http.json_input import MAX_DEPTH, TooDeep
from edgeway.http.outgoing import UnsafeRequest, check_request, request_target


def calls(**named: dict[str, Any]) -> dict[str, Any]:
    return {"calls": named}


def write_module(tmp_path: Path, source: str) -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    name = f"bff_{suffix}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source).replace("{u}", suffix))
    return name, suffix


def endpoint_config(
    tmp_path: Path, module: str, routes: list[dict[str, Any]], running: dict[str, JsonService]
) -> dict[str, Any]:
    return {
        "name": "py-test",
        "python": {"modules": [module], "paths": [str(tmp_path)]},
        "services": {n: {"instances": [s.url]} for n, s in running.items()},
        "routes": routes,
    }


# -- a service's error body is data, never keyword arguments ---------------------------------------

# Every name the gateway's own problem members, parameters or keywords use.
HOSTILE_PROBLEM = {
    "title": "Order not found",
    "detail": "no order 9",
    "call": "evil",
    "service": "evil",
    "headers": [["set-cookie", "x=1"]],
    "members": {"a": 1},
    "extra": 1,
    "status": 200,
    "request_id": "forged",
    "code": "forged",
    "instance": "/orders/9",
}


async def test_a_required_calls_error_body_with_the_gateways_member_names_passes_as_data() -> None:
    async with services(orders=lambda s: Reply(404, HOSTILE_PROBLEM)) as svc:
        cfg = aggregate_config(svc, calls(order={"service": "orders", "path": "/orders/9", "group": "o"}))
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen", headers={"x-request-id": "req-16"})
    assert answer.status == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert "set-cookie" not in answer.headers
    body = answer.json()
    assert body["title"] == "Order not found"
    assert body["detail"] == "no order 9"
    assert body["status"] == 404  # the response's, not the service's
    assert body["request_id"] == "req-16"
    assert body["call"] == "order"  # the gateway's member wins the name
    # The service's other members pass through as members.
    assert body["service"] == "evil"
    assert body["headers"] == [["set-cookie", "x=1"]]
    assert body["members"] == {"a": 1}
    assert body["instance"] == "/orders/9"


ENDPOINT_16 = """
    from edgeway.bff import endpoint

    @endpoint(name="lost_{u}")
    async def lost(req):
        (await req.services.orders.get("/orders/9")).raise_for_status()
"""


async def test_an_endpoints_raise_for_status_passes_a_hostile_error_body_as_data(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, ENDPOINT_16)
    async with services(orders=lambda s: Reply(404, HOSTILE_PROBLEM)) as svc:
        cfg = endpoint_config(
            tmp_path, module, [{"match": {"path": "/lost"}, "endpoint": {"name": f"lost_{u}"}}], svc
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/lost")
    assert answer.status == 404
    body = answer.json()
    assert body["detail"] == "no order 9"
    assert body["service"] == "orders"
    assert body["call"] == "evil"
    assert body["status"] == 404


# -- the top-level `_meta` is the gateway's --------------------------------------------------------


async def test_a_services_own_meta_never_reaches_the_client_as_the_gateways() -> None:
    forged = {"completed": True, "errors": {}}
    async with services(
        a=lambda s: {"a": 1, "_meta": forged},
        b=lambda s: {"b": 1, "_meta": forged},
        down=lambda s: Reply(503, {}),
    ) as svc:
        whole = aggregate_config(svc, {"merge": "override", **calls(a={"service": "a", "path": "/"})})
        partial = aggregate_config(
            svc,
            {
                "merge": "deep",
                **calls(
                    a={"service": "a", "path": "/"},
                    down={"service": "down", "path": "/", "group": "d", "required": False},
                    b={"service": "b", "path": "/"},
                ),
            },
        )
        grouped = aggregate_config(svc, calls(a={"service": "a", "path": "/", "group": "a"}))
        async with gateway(whole) as (port, _):
            complete = await request(port, "GET", "/screen")
        async with gateway(partial) as (port, _):
            incomplete = await request(port, "GET", "/screen")
        async with gateway(grouped) as (port, _):
            nested = await request(port, "GET", "/screen")
    assert complete.json() == {"a": 1}
    assert "x-edgeway-completed" not in complete.headers
    assert incomplete.json() == {
        "a": 1,
        "b": 1,
        "_meta": {"completed": False, "errors": {"down": {"status": 503, "reason": "down answered 503"}}},
    }
    assert nested.json() == {"a": {"a": 1, "_meta": forged}}  # under a group it is the service's data


# -- the endpoint deadline keeps the answers already in --------------------------------------------


@pytest.mark.parametrize("guarded", [False, True], ids=["direct", "guarded"])
async def test_the_deadline_keeps_answers_that_arrived_whatever_their_order(guarded: bool) -> None:
    # The slow optional call is declared first: the run awaits it while the others answer.
    async with services(
        slow=lambda s: Reply(body={"slow": 1}, delay=2.0),
        a=lambda s: {"a": 1},
        b=lambda s: {"b": 2},
    ) as svc:
        overrides = {"a": {"breaker": {"service": {"consecutive_failures": 5}}}} if guarded else {}
        cfg = aggregate_config(
            svc,
            {
                "deadline": "300ms",
                **calls(
                    slow={"service": "slow", "path": "/", "group": "slow", "required": False},
                    a={"service": "a", "path": "/", "group": "a"},
                    b={"service": "b", "path": "/", "group": "b", "required": False},
                ),
            },
            service_overrides=overrides,
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.status == 200, answer.body
    body = answer.json()
    assert body["a"] == {"a": 1}
    assert body["b"] == {"b": 2}
    assert "slow" not in body
    assert list(body["_meta"]["errors"]) == ["slow"]
    assert body["_meta"]["errors"]["slow"]["code"] == "deadline"


# -- max_response_bytes refuses, never truncates ---------------------------------------------------


class RawService:
    """Answers every request with ``response`` as is, counting connections and requests."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawService:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await read_request(r)
                self.requests += 1
                w.write(self.response)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


def _chunked(body: bytes, size: int = 1000) -> bytes:
    out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        out += b"%x\r\n%b\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def _sized(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )


BIG = orjson.dumps({"items": ["x" * 100] * 100})  # ~10 KB of JSON
PADDED = b'{"ok": true}' + b" " * 10_000  # valid JSON, then padding


@pytest.mark.parametrize(
    "response",
    [_sized(BIG), _chunked(BIG), _sized(PADDED), _chunked(PADDED)],
    ids=["declared", "chunked", "padded-declared", "padded-chunked"],
)
async def test_an_answer_past_max_response_bytes_is_refused_as_too_large(response: bytes) -> None:
    async with RawService(response) as big, services(small=lambda s: {"small": 1}) as svc:
        cfg = aggregate_config(
            svc,
            {
                "max_response_bytes": "4KB",
                **calls(
                    big={"service": "big", "path": "/", "group": "big", "required": False},
                    small={"service": "small", "path": "/", "group": "small"},
                ),
            },
        )
        cfg["services"]["big"] = {"instances": [f"http://127.0.0.1:{big.port}"]}
        required = aggregate_config(
            svc, {"max_response_bytes": "4KB", **calls(big={"service": "big", "path": "/", "group": "big"})}
        )
        required["services"]["big"] = {"instances": [f"http://127.0.0.1:{big.port}"]}
        async with gateway(cfg) as (port, _):
            first = await request(port, "GET", "/screen")
            second = await request(port, "GET", "/screen")
        async with gateway(required) as (port, _):
            failed = await request(port, "GET", "/screen")
    for answer in (first, second):
        assert answer.status == 200
        body = answer.json()
        assert body["small"] == {"small": 1}
        assert "big" not in body
        error = body["_meta"]["errors"]["big"]
        assert (error["status"], error["code"]) == (502, "too_large")
    assert failed.status == 502
    assert failed.json()["code"] == "too_large"


ENDPOINT_17 = """
    from edgeway.bff import endpoint

    @endpoint(name="big_{u}")
    async def big(req):
        return (await req.services.big.get("/")).json()
"""


async def test_an_endpoint_call_past_the_size_limit_is_refused_as_too_large(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, ENDPOINT_17)
    padded = b'{"ok": true}' + b" " * (9 * 1024 * 1024)  # past the clients' 8 MiB limit
    async with RawService(_chunked(padded, 256 * 1024)) as big:
        cfg = endpoint_config(
            tmp_path, module, [{"match": {"path": "/big"}, "endpoint": {"name": f"big_{u}"}}], {}
        )
        cfg["services"]["big"] = {"instances": [f"http://127.0.0.1:{big.port}"]}
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/big")
    assert answer.status == 502
    assert answer.json()["code"] == "too_large"


# -- one JSON depth limit, enforced when reading ---------------------------------------------------


def nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"[1]" + b"}" * (depth - 1)


def test_json_deeper_than_the_limit_is_refused_when_read() -> None:
    assert json_input.loads(nested(MAX_DEPTH)) is not None
    with pytest.raises(TooDeep) as caught:
        json_input.loads(nested(MAX_DEPTH + 1))
    assert isinstance(caught.value, orjson.JSONDecodeError)  # every "not JSON" handler takes it
    assert str(caught.value) == f"JSON nested deeper than {MAX_DEPTH} levels"
    # Brackets inside strings, and many shallow containers, are not depth.
    assert json_input.loads(orjson.dumps({"s": "[{" * 500, "l": [[1]] * 500}))["s"] == "[{" * 500
    with pytest.raises(TooDeep):
        json_input.loads(nested(MAX_DEPTH + 1).decode())
    # Whatever passes the limit can be encoded again with the levels the gateway adds around it.
    orjson.dumps([[[{"g": json_input.loads(nested(MAX_DEPTH))}]]])


async def test_a_deep_answer_fails_only_its_call() -> None:
    deep = nested(300)  # parses (orjson reads 1,024 levels), cannot be encoded again (254)
    async with services(deep=lambda s: Reply(raw=deep), ok=lambda s: {"ok": 1}) as svc:
        optional = aggregate_config(
            svc,
            calls(
                deep={"service": "deep", "path": "/", "group": "deep", "required": False},
                ok={"service": "ok", "path": "/", "group": "ok"},
            ),
        )
        required = aggregate_config(svc, calls(deep={"service": "deep", "path": "/", "group": "deep"}))
        async with gateway(optional) as (port, _):
            partial = await request(port, "GET", "/screen")
        async with gateway(required) as (port, _):
            failed = await request(port, "GET", "/screen")
    assert partial.status == 200
    assert partial.json()["ok"] == {"ok": 1}
    assert partial.json()["_meta"]["errors"]["deep"] == {
        "status": 502,
        "reason": f"deep answered 200 with JSON nested deeper than {MAX_DEPTH} levels",
    }
    assert failed.status == 502
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["call"] == "deep"


ENDPOINT_18 = """
    from edgeway.bff import endpoint

    @endpoint(name="echo_{u}")
    async def echo(req):
        return {"got": await req.json()}
"""


async def test_a_deep_client_body_is_a_400_not_a_500(tmp_path: Path) -> None:
    deep = nested(300)
    module, u = write_module(tmp_path, ENDPOINT_18)
    async with services(sink=lambda s: {"ok": 1}) as svc:
        agg = aggregate_config(
            svc,
            calls(
                sink={"service": "sink", "method": "POST", "path": "/", "group": "s", "body": {"w": "{body}"}}
            ),
        )
        async with gateway(agg) as (port, _):
            composed = await request(port, "POST", "/screen", body=deep)
        assert svc["sink"].seen == []
        cfg = endpoint_config(
            tmp_path, module, [{"match": {"path": "/echo"}, "endpoint": {"name": f"echo_{u}"}}], {}
        )
        async with gateway(cfg) as (port, _):
            echoed = await request(port, "POST", "/echo", body=deep)
    assert composed.status == 400
    assert f"nested deeper than {MAX_DEPTH} levels" in composed.json()["detail"]
    assert echoed.status == 400
    assert f"nested deeper than {MAX_DEPTH} levels" in echoed.json()["detail"]


# -- nothing built from values can smuggle a request -----------------------------------------------

SMUGGLE = "x HTTP/1.1\r\nhost: a\r\n\r\nGET /admin HTTP/1.1\r\nx-smuggled: 1\r\nx:"

ENDPOINT_7 = """
    from edgeway.bff import endpoint

    @endpoint(name="search_{u}")
    async def search(req):
        return (await req.services.svc.get("/search?q=" + req.query.get("q"))).json()

    @endpoint(name="header_{u}")
    async def header(req):
        return (await req.services.svc.get("/search", headers={"x-q": req.query.get("q")})).json()
"""


async def test_a_python_endpoint_cannot_be_made_to_smuggle_a_request(tmp_path: Path) -> None:
    module, u = write_module(tmp_path, ENDPOINT_7)
    async with services(svc=lambda s: {"path": s.path, "q": s.query.get("q")}) as svc:
        cfg = endpoint_config(
            tmp_path,
            module,
            [
                {"match": {"path": "/search"}, "endpoint": {"name": f"search_{u}"}},
                {"match": {"path": "/header"}, "endpoint": {"name": f"header_{u}"}},
            ],
            svc,
        )
        encoded = quote(SMUGGLE, safe="")
        async with gateway(cfg) as (port, _):
            searched = await request(port, "GET", f"/search?q={encoded}")
            headed = await request(port, "GET", f"/header?q={encoded}")
            await asyncio.sleep(0.05)
        seen = svc["svc"].seen
    # The value stays a value: one request, the whole value in its query.
    assert searched.status == 200, searched.body
    assert searched.json() == {"path": "/search", "q": [SMUGGLE]}
    assert [s.path for s in seen] == ["/search"]
    assert "x-smuggled" not in seen[0].headers
    # In a header it cannot be carried at all: refused before sending, and said so.
    assert headed.status == 400
    assert headed.json()["code"] == "unsafe_request"
    assert "'x-q'" in headed.json()["detail"]


async def test_a_control_character_from_the_client_never_reaches_an_aggregate_calls_header() -> None:
    async with services(svc=lambda s: {"ok": 1}) as svc:
        cfg = aggregate_config(
            svc, calls(svc={"service": "svc", "path": "/", "group": "s", "headers": {"x-q": "{query.q}"}})
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen?q=a%01b")
        assert svc["svc"].seen == []
    assert answer.status == 400
    assert "header 'x-q'" in answer.json()["detail"]


def test_check_request_holds_built_requests_to_the_parsers_rules() -> None:
    ok = b"x-a: 1\r\nx-b: caf\xc3\xa9\t!\r\n"
    check_request(b"GET", b"/a/b?c=%20&d=[1]", ok)
    check_request(b"M-SEARCH", b"/", b"")
    for method, target, headers in [
        (b"GE T", b"/", b""),
        (b"GET", b"/a b", b""),
        (b"GET", b"/a\r\nx: 1", b""),
        (b"GET", b"/caf\xc3\xa9", b""),
        (b"GET", b"/a\x7f", b""),
        (b"GET", b"a", b""),
        (b"GET", b"/", b"x-a: 1\r\nx-b: a\rb\r\n"),
        (b"GET", b"/", b"x-a: 1\nx-b: 2\r\n"),
        (b"GET", b"/", b"x-a: \x00\r\n"),
        (b"GET", b"/", b"x a: 1\r\n"),
        (b"GET", b"/", b"no colon\r\n"),
        (b"GET", b"/", b"x-a: 1"),
    ]:
        with pytest.raises(UnsafeRequest):
            check_request(method, target, headers)
    assert request_target("/s?q=a b\r\n#é") == b"/s?q=a%20b%0D%0A%23%C3%A9"
    assert request_target("/a%2Fb?x=[1]&y=@") == b"/a%2Fb?x=[1]&y=@"
    with pytest.raises(UnsafeRequest):
        request_target("host/x")


def test_config_text_that_goes_into_a_request_line_is_visible_ascii() -> None:
    def problems(route: dict[str, Any], service: dict[str, Any] | None = None) -> list[str]:
        svc = {"instances": ["http://127.0.0.1:9"], **(service or {})}
        try:
            validate_config({"services": {"svc": svc}, "routes": [route]})
        except ConfigError as exc:
            return [f"{issue.key_path}: {issue.message}" for issue in exc.issues]
        return []

    proxy = {"service": "svc"}
    for rewrite in ("/a b/{id}", "/caf\u00e9/{id}", "/a\x01/{id}"):
        found = problems({"match": {"path": "/x/{id}"}, "proxy": {**proxy, "rewrite": rewrite}})
        assert any("visible ASCII only" in p for p in found), found
    assert problems({"match": {"path": "/x/{id}"}, "proxy": {**proxy, "rewrite": "/a%20b/{id}"}}) == []
    for path in ("/health\x00", "/h\u00e9alth", "/a\x7f"):
        found = problems({"match": {"path": "/x"}, "proxy": proxy}, {"health_check": {"path": path}})
        assert any("health_check.path" in p for p in found), found
