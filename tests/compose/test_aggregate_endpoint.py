"""Aggregate endpoints end to end: a real gateway over sockets in front of real JSON services.

What each test pins down is in its name: parallelism, dependencies, fan-out, timeouts and the
deadline, the status policy for failures, fallbacks, what crosses to the services.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from compose_helpers import Reply, Seen, aggregate_config, gateway, request, services

from conftest import dead_port


def calls(**named: dict[str, Any]) -> dict[str, Any]:
    return {"calls": named}


async def test_independent_calls_run_in_parallel_and_merge_into_one_object() -> None:
    def slow(name: str) -> Any:
        return lambda seen: Reply(body={name: {"ok": True}}, delay=0.3)

    async with services(a=slow("a"), b=slow("b"), c=slow("c")) as svc:
        cfg = aggregate_config(
            svc,
            calls(**{n: {"service": n, "path": f"/{n}", "allow": [n]} for n in ("a", "b", "c")}),
        )
        async with gateway(cfg) as (port, _):
            started = time.perf_counter()
            answer = await request(port, "GET", "/screen")
            elapsed = time.perf_counter() - started
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"a": {"ok": True}, "b": {"ok": True}, "c": {"ok": True}}
    assert "x-edgeway-completed" not in answer.headers
    assert elapsed < 0.6, f"three 0.3 s calls took {elapsed:.2f} s: not parallel"


async def test_a_call_that_reads_another_runs_after_it_and_gets_its_values() -> None:
    order_done = 0.0
    user_started = 0.0

    async def orders(seen: Seen) -> Any:
        nonlocal order_done
        await asyncio.sleep(0.1)
        order_done = time.perf_counter()
        return {"id": 7, "customer": {"id": "u/1 x"}}

    def users(seen: Seen) -> Any:
        nonlocal user_started
        user_started = time.perf_counter()
        return {"name": "Ada", "seen_path": seen.path}

    async with services(orders=orders, users=users) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                user={"service": "users", "path": "/users/{calls.order.customer.id}", "group": "customer"},
                order={"service": "orders", "path": "/orders/{path.id}", "group": "order"},
            ),
            path="/orders/{id}",
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/orders/7")
            assert svc["orders"].seen[0].path == "/orders/7"
            # A value from a response is percent-encoded into the path.
            assert svc["users"].seen[0].path == "/users/u%2F1%20x"
    assert answer.status == 200
    assert user_started >= order_done
    assert answer.json() == {
        "customer": {"name": "Ada", "seen_path": "/users/u%2F1%20x"},
        "order": {"id": 7, "customer": {"id": "u/1 x"}},
    }


async def test_for_each_calls_once_per_distinct_element_in_bounded_parallel() -> None:
    in_flight = peak = 0

    async def products(seen: Seen) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        sku = seen.path.rsplit("/", 1)[1]
        return {"sku": sku, "name": f"product {sku}", "cost": 1}

    items = [{"sku": s} for s in ("a", "b", "a", "c", "d", "e", "f")]
    async with services(orders=lambda s: {"items": items}, catalog=products) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={"service": "orders", "path": "/o", "group": "order"},
                products={
                    "service": "catalog",
                    "path": "/products/{item}",
                    "for_each": "{calls.order.items[*].sku}",
                    "concurrency": 2,
                    "deny": ["cost"],
                    "group": "products",
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
            asked = sorted(s.path for s in svc["catalog"].seen)
    assert answer.status == 200
    # Results in element order, the repeated "a" asked for once.
    assert [p["sku"] for p in answer.json()["products"]] == ["a", "b", "a", "c", "d", "e", "f"]
    assert answer.json()["products"][0] == {"sku": "a", "name": "product a"}
    assert asked == [f"/products/{s}" for s in "abcdef"]
    assert peak == 2


async def test_for_each_over_objects_reads_fields_of_the_element() -> None:
    items = [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]
    async with services(orders=lambda s: {"items": items}, stock=lambda s: {"q": s.query}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={"service": "orders", "path": "/o", "group": "order"},
                stock={
                    "service": "stock",
                    "path": "/stock/{item.sku}",
                    "query": {"need": "{item.qty}"},
                    "for_each": "{calls.order.items}",
                    "group": "stock",
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.json()["stock"] == [{"q": {"need": ["2"]}}, {"q": {"need": ["1"]}}]


async def test_a_batch_call_sends_every_value_at_once_joined_or_as_json() -> None:
    items = [{"sku": "a"}, {"sku": "b"}, {"sku": "a"}, {"other": 1}]

    def catalog(seen: Seen) -> Any:
        if seen.method == "POST":
            return [{"sku": sku, "via": "body"} for sku in seen.json()["skus"]]
        return [{"sku": sku, "via": "query"} for sku in seen.query["ids"][0].split("|")]

    async with services(orders=lambda s: {"items": items}, catalog=catalog) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={"service": "orders", "path": "/o", "group": "order"},
                by_query={
                    "service": "catalog",
                    "path": "/products",
                    "query": {"ids": "{batch}"},
                    "batch": "{calls.order.items[*].sku}",
                    "batch_separator": "|",
                    "collection": True,
                    "group": "by_query",
                },
                by_body={
                    "service": "catalog",
                    "method": "POST",
                    "path": "/products/search",
                    "body": {"skus": "{batch}", "note": "for order {calls.order.items[0].sku}"},
                    "batch": "{calls.order.items[*].sku}",
                    "collection": True,
                    "allow": ["sku"],
                    "group": "by_body",
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
            seen = {s.method: s for s in svc["catalog"].seen}
    assert answer.status == 200
    body = answer.json()
    assert body["by_query"] == [{"sku": "a", "via": "query"}, {"sku": "b", "via": "query"}]
    assert body["by_body"] == [{"sku": "a"}, {"sku": "b"}]
    assert seen["GET"].query == {"ids": ["a|b"]}
    assert seen["POST"].json() == {"skus": ["a", "b"], "note": "for order a"}
    assert seen["POST"].headers["content-type"] == "application/json"


async def test_an_empty_batch_makes_no_call() -> None:
    async with services(orders=lambda s: {"items": []}, catalog=lambda s: [{"x": 1}]) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={"service": "orders", "path": "/o", "group": "order"},
                products={
                    "service": "catalog",
                    "path": "/p",
                    "query": {"ids": "{batch}"},
                    "batch": "{calls.order.items[*].sku}",
                    "collection": True,
                    "group": "products",
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
            assert svc["catalog"].seen == []
    assert answer.json() == {"order": {"items": []}, "products": []}


async def test_fan_out_element_failures_fail_the_call_or_leave_null_or_are_dropped() -> None:
    def catalog(seen: Seen) -> Any:
        sku = seen.path.rsplit("/", 1)[1]
        return Reply(404, {"title": "gone"}) if sku == "b" else {"sku": sku}

    def config(mode: str) -> Any:
        return calls(
            order={"service": "orders", "path": "/o", "allow": ["id"]},
            products={
                "service": "catalog",
                "path": "/p/{item}",
                "for_each": "{calls.order.skus}",
                "on_item_error": mode,
                "required": False,
                "group": "products",
            },
        )

    async with services(orders=lambda s: {"id": 1, "skus": ["a", "b", "c"]}, catalog=catalog) as svc:
        answers = {}
        for mode in ("fail", "null", "drop"):
            async with gateway(aggregate_config(svc, config(mode))) as (port, _):
                answers[mode] = await request(port, "GET", "/screen")
    error = {"status": 404, "reason": "catalog answered 404", "items": [1]}
    assert answers["fail"].json() == {"id": 1, "_meta": {"completed": False, "errors": {"products": error}}}
    assert answers["null"].json()["products"] == [{"sku": "a"}, None, {"sku": "c"}]
    assert answers["drop"].json()["products"] == [{"sku": "a"}, {"sku": "c"}]
    for answer in answers.values():
        assert answer.headers["x-edgeway-completed"] == "false"
        assert answer.json()["_meta"]["errors"]["products"] == error


async def test_a_slow_optional_call_times_out_and_the_rest_is_answered_incomplete() -> None:
    async with services(fast=lambda s: {"fast": 1}, slow=lambda s: Reply(body={"slow": 1}, delay=2.0)) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                fast={"service": "fast", "path": "/", "allow": ["fast"]},
                slow={
                    "service": "slow",
                    "path": "/",
                    "allow": ["slow"],
                    "timeout": "150ms",
                    "required": False,
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            started = time.perf_counter()
            answer = await request(port, "GET", "/screen")
            elapsed = time.perf_counter() - started
    assert answer.status == 200
    assert answer.headers["x-edgeway-completed"] == "false"
    body = answer.json()
    assert body["fast"] == 1
    assert "slow" not in body
    meta = body["_meta"]
    assert meta["completed"] is False
    assert meta["errors"]["slow"]["status"] == 504
    assert "timeout after 0.15s" in meta["errors"]["slow"]["reason"]
    assert elapsed < 1.0


async def test_a_slow_required_call_is_a_504_problem() -> None:
    async with services(slow=lambda s: Reply(body={"slow": 1}, delay=2.0)) as svc:
        cfg = aggregate_config(svc, calls(slow={"service": "slow", "path": "/", "timeout": 0.1}))
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen", headers={"x-request-id": "req-504"})
    assert answer.status == 504
    assert answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["status"] == 504
    assert problem["call"] == "slow"
    assert problem["request_id"] == "req-504"
    assert "call 'slow' failed" in problem["detail"]


async def test_the_deadline_bounds_the_whole_endpoint_and_cuts_calls_in_flight() -> None:
    async with services(
        quick=lambda s: {"quick": 1}, slow=lambda s: Reply(body={"slow": 1}, delay=2.0)
    ) as svc:
        optional = calls(
            quick={"service": "quick", "path": "/", "allow": ["quick"]},
            slow={"service": "slow", "path": "/", "allow": ["slow"], "required": False},
        )
        required = calls(
            quick={"service": "quick", "path": "/", "allow": ["quick"]},
            slow={"service": "slow", "path": "/", "allow": ["slow"]},
        )
        async with gateway(aggregate_config(svc, {**optional, "deadline": "200ms"})) as (port, _):
            started = time.perf_counter()
            partial = await request(port, "GET", "/screen")
            elapsed = time.perf_counter() - started
        async with gateway(aggregate_config(svc, {**required, "deadline": 0.2})) as (port, _):
            failed = await request(port, "GET", "/screen")
    assert elapsed < 1.0
    assert partial.status == 200
    assert partial.json()["quick"] == 1
    assert partial.json()["_meta"]["errors"]["slow"] == {
        "status": 504,
        "reason": "slow: upstream deadline timeout after 0.2s",
        "code": "deadline",
    }
    assert failed.status == 504
    assert failed.json()["call"] == "slow"


async def test_calls_not_yet_started_when_the_deadline_passes_never_start() -> None:
    async with services(
        first=lambda s: Reply(body={"id": 1}, delay=0.3), second=lambda s: {"second": 1}
    ) as svc:
        cfg = aggregate_config(
            svc,
            {
                "deadline": "100ms",
                **calls(
                    first={
                        "service": "first",
                        "path": "/",
                        "group": "first",
                        "required": False,
                        "fallback": {},
                    },
                    second={
                        "service": "second",
                        "path": "/{calls.first.id}",
                        "group": "second",
                        "required": False,
                    },
                ),
            },
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
            assert svc["second"].seen == []
    errors = answer.json()["_meta"]["errors"]
    assert errors["first"]["status"] == 504
    assert errors["second"]["status"] == 504
    assert answer.json()["first"] == {}


async def test_a_required_calls_4xx_passes_through_with_the_services_problem() -> None:
    problem = {
        "type": "https://errors.example/order-missing",
        "title": "Order not found",
        "detail": "no order 9",
        "code": 9,
    }
    async with services(orders=lambda s: Reply(404, problem), users=lambda s: {"u": 1}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={"service": "orders", "path": "/orders/9", "group": "order"},
                user={"service": "users", "path": "/u", "group": "user"},
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.status == 404
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["status"] == 404
    assert body["title"] == "Order not found"
    assert body["detail"] == "no order 9"
    assert body["type"] == "https://errors.example/order-missing"
    assert body["code"] == 9
    assert body["call"] == "order"


async def test_a_required_calls_5xx_is_a_502_and_an_optional_ones_is_reported() -> None:
    async with services(bad=lambda s: Reply(503, {"title": "down"}), good=lambda s: {"good": 1}) as svc:
        required = calls(
            good={"service": "good", "path": "/", "allow": ["good"]},
            bad={"service": "bad", "path": "/", "group": "bad"},
        )
        optional = calls(
            good={"service": "good", "path": "/", "allow": ["good"]},
            bad={"service": "bad", "path": "/", "group": "bad", "required": False},
        )
        async with gateway(aggregate_config(svc, required)) as (port, _):
            failed = await request(port, "GET", "/screen")
        async with gateway(aggregate_config(svc, optional)) as (port, _):
            partial = await request(port, "GET", "/screen")
    assert failed.status == 502
    assert failed.json()["detail"] == "call 'bad' failed: bad answered 503"
    assert "title" not in {k for k, v in failed.json().items() if v == "down"}  # a 5xx body is not passed on
    assert partial.status == 200
    assert partial.json() == {
        "good": 1,
        "_meta": {"completed": False, "errors": {"bad": {"status": 503, "reason": "bad answered 503"}}},
    }


async def test_an_unreachable_service_is_a_502() -> None:
    closed = dead_port()
    async with services(good=lambda s: {"good": 1}) as svc:
        cfg = aggregate_config(svc, calls(gone={"service": "gone", "path": "/", "group": "gone"}))
        cfg["services"]["gone"] = {"instances": [f"http://127.0.0.1:{closed}"]}
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.status == 502
    assert "cannot connect to 127.0.0.1" in answer.json()["detail"]


async def test_an_answer_that_is_not_json_fails_the_call() -> None:
    async with services(html=lambda s: Reply(raw=b"<html>oops</html>")) as svc:
        cfg = aggregate_config(svc, calls(page={"service": "html", "path": "/", "group": "page"}))
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.status == 502
    assert answer.json()["detail"] == "call 'page' failed: html answered 200 with a body that is not JSON"


async def test_a_fallback_stands_in_for_a_failed_call_and_dependents_read_it() -> None:
    async with services(
        prefs=lambda s: Reply(500, None), feed=lambda s: {"items": [s.query["lang"][0]]}
    ) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                prefs={
                    "service": "prefs",
                    "path": "/prefs",
                    "group": "prefs",
                    "required": False,
                    "fallback": {"lang": "en", "theme": "light"},
                },
                feed={
                    "service": "feed",
                    "path": "/feed",
                    "query": {"lang": "{calls.prefs.lang}"},
                    "group": "feed",
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.status == 200
    assert answer.headers["x-edgeway-completed"] == "false"
    assert answer.json() == {
        "prefs": {"lang": "en", "theme": "light"},
        "feed": {"items": ["en"]},
        "_meta": {"completed": False, "errors": {"prefs": {"status": 500, "reason": "prefs answered 500"}}},
    }


async def test_an_optional_call_whose_dependency_failed_is_skipped_and_says_why() -> None:
    async with services(a=lambda s: Reply(500, None), b=lambda s: {"b": 1}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                a={"service": "a", "path": "/", "group": "a", "required": False},
                b={"service": "b", "path": "/{calls.a.id}", "group": "b", "required": False},
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
            assert svc["b"].seen == []
    assert answer.json() == {
        "_meta": {
            "completed": False,
            "errors": {
                "a": {"status": 500, "reason": "a answered 500"},
                "b": {"status": 502, "reason": "skipped: 'a' failed"},
            },
        }
    }


async def test_the_client_body_goes_to_the_calls_told_to_take_it() -> None:
    async with services(
        orders=lambda s: Reply(201, {"order_id": 42}),
        audit=lambda s: {"logged": True},
        quote=lambda s: {"q": 1},
    ) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={
                    "service": "orders",
                    "method": "POST",
                    "path": "/orders",
                    "body": "client",
                    "group": "order",
                },
                audit={
                    "service": "audit",
                    "method": "PUT",
                    "path": "/audit/{calls.order.order_id}",
                    "body": {"sku": "{body.items[0].sku}", "count": "{body.count}", "who": "{header.x-user}"},
                    "group": "audit",
                },
                quote={"service": "quote", "path": "/quote", "group": "quote"},
            ),
            match={"methods": ["POST"]},
        )
        client_body = orjson.dumps({"items": [{"sku": "a-1"}], "count": 3})
        async with gateway(cfg) as (port, _):
            answer = await request(
                port,
                "POST",
                "/screen",
                body=client_body,
                headers={"content-type": "application/vnd.shop+json", "x-user": "ada"},
            )
            order, audit, quote = svc["orders"].seen[0], svc["audit"].seen[0], svc["quote"].seen[0]
    assert answer.status == 200
    assert answer.json() == {"order": {"order_id": 42}, "audit": {"logged": True}, "quote": {"q": 1}}
    assert (order.method, order.body) == ("POST", client_body)
    assert order.headers["content-type"] == "application/vnd.shop+json"
    assert audit.method == "PUT"
    assert audit.path == "/audit/42"
    assert audit.json() == {"sku": "a-1", "count": 3, "who": "ada"}  # a whole reference keeps its type
    assert audit.headers["content-type"] == "application/json"
    assert (quote.method, quote.body) == ("GET", b"")
    assert "content-type" not in quote.headers


async def test_a_body_that_is_not_json_is_a_400_for_calls_that_read_it() -> None:
    async with services(s=lambda seen: {"x": 1}) as svc:
        cfg = aggregate_config(
            svc,
            calls(x={"service": "s", "method": "POST", "path": "/", "body": {"v": "{body.v}"}, "group": "x"}),
            match={"methods": ["POST"]},
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "POST", "/screen", body=b"{nope")
    assert answer.status == 400
    assert answer.json()["detail"] == "call 'x' failed: the request body is not valid JSON"


async def test_what_crosses_to_the_services() -> None:
    async with services(a=lambda s: {"a": 1}, b=lambda s: {"b": 1}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                a={"service": "a", "path": "/a", "allow": ["a"], "headers": {"X-Tenant": "t-{query.tenant}"}},
                b={"service": "b", "path": "/b", "allow": ["b"], "forward_headers": ["x-extra"]},
            ),
        )
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        async with gateway(cfg) as (port, _):
            answer = await request(
                port,
                "GET",
                "/screen?tenant=acme",
                headers={
                    "x-request-id": "req-1",
                    "traceparent": tp,
                    "authorization": "Bearer t0k",
                    "accept-language": "fr",
                    "x-edgeway-subject": "user-1",
                    "x-edgeway-roles": "customer",
                    "cookie": "session=secret",
                    "x-extra": "e",
                    "x-forwarded-for": "10.0.0.1",
                },
            )
            a, b = svc["a"].seen[0], svc["b"].seen[0]
    assert answer.headers["x-request-id"] == "req-1"
    client_span = answer.headers["traceparent"].split("-")
    assert client_span[1] == "0af7651916cd43dd8448eb211c80319c"
    for seen in (a, b):
        assert seen.headers["x-request-id"] == "req-1"
        assert seen.headers["x-forwarded-for"] == "127.0.0.1"  # an untrusted client's claim is replaced
        assert seen.headers["accept"] == "application/json"
        assert "cookie" not in seen.headers
    # The default forward list: the token and the language. Identity headers come only from
    # the auth filter: a gateway without `auth` never passes a client's copies on.
    assert a.headers["authorization"] == "Bearer t0k"
    assert a.headers["accept-language"] == "fr"
    assert "x-edgeway-subject" not in a.headers
    assert "x-edgeway-roles" not in a.headers
    assert a.headers["x-tenant"] == "t-acme"
    assert "x-extra" not in a.headers
    # A call's own list replaces the default.
    assert b.headers["x-extra"] == "e"
    assert "authorization" not in b.headers
    # Each call is a span of its own in the client's trace.
    spans = [seen.headers["traceparent"].split("-") for seen in (a, b)]
    assert {s[1] for s in spans} == {"0af7651916cd43dd8448eb211c80319c"}
    assert len({s[2] for s in spans} | {client_span[2], "b7ad6b7169203331"}) == 4


async def test_query_parameters_render_and_an_absent_one_is_left_out() -> None:
    async with services(s=lambda seen: {"q": seen.query}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                x={
                    "service": "s",
                    "path": "/search?fixed=1",
                    "query": {"q": "{query.q}", "page": "{query.page}", "tag": "t:{query.q}"},
                    "group": "x",
                }
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen?q=a%20b%26c")
    assert answer.json()["x"]["q"] == {"fixed": ["1"], "q": ["a b&c"], "tag": ["t:a b&c"]}


async def test_a_value_missing_from_the_request_is_a_400_and_from_a_response_a_502() -> None:
    async with services(s=lambda seen: {"x": 1}) as svc:
        from_request = calls(x={"service": "s", "path": "/{header.x-tenant}", "group": "x"})
        from_response = calls(
            a={"service": "s", "path": "/a", "group": "a"},
            b={"service": "s", "path": "/{calls.a.missing}", "group": "b"},
        )
        async with gateway(aggregate_config(svc, from_request)) as (port, _):
            bad_request = await request(port, "GET", "/screen")
        async with gateway(aggregate_config(svc, from_response)) as (port, _):
            bad_gateway = await request(port, "GET", "/screen")
    assert bad_request.status == 400
    assert bad_request.json()["detail"] == "call 'x' failed: the request has no header 'x-tenant'"
    assert bad_gateway.status == 502
    assert bad_gateway.json()["detail"] == "call 'b' failed: the response of 'a' has no 'missing'"


async def test_a_line_break_from_a_response_never_reaches_a_header() -> None:
    async with services(a=lambda s: {"v": "x\r\nx-injected: 1"}, b=lambda s: {"b": 1}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                a={"service": "a", "path": "/", "group": "a"},
                b={
                    "service": "b",
                    "path": "/",
                    "headers": {"x-v": "{calls.a.v}"},
                    "group": "b",
                    "required": False,
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
            assert svc["b"].seen == []
    assert answer.json()["_meta"]["errors"]["b"] == {
        "status": 502,
        "reason": "header 'x-v' would hold a line break or another control character",
    }


async def test_shaping_applies_through_the_gateway() -> None:
    order = {"data": {"id": 1, "secret": "s", "lines": [{"sku": "a", "cost": 3}], "state": "paid"}}
    async with services(orders=lambda s: order) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                order={
                    "service": "orders",
                    "path": "/",
                    "unwrap": "data",
                    "deny": ["secret", "lines.cost"],
                    "rename": {"state": "status"},
                    "group": "order",
                }
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.json() == {"order": {"id": 1, "lines": [{"sku": "a"}], "status": "paid"}}


async def test_an_aggregate_route_takes_any_method_it_matches() -> None:
    async with services(s=lambda seen: {"method_seen": seen.method}) as svc:
        cfg = aggregate_config(
            svc,
            calls(x={"service": "s", "method": "DELETE", "path": "/thing", "group": "x"}),
            match={"methods": ["DELETE", "PATCH"]},
        )
        async with gateway(cfg) as (port, _):
            deleted = await request(port, "DELETE", "/screen")
            patched = await request(port, "PATCH", "/screen", body=b"{}")
            refused = await request(port, "GET", "/screen")
    assert deleted.json() == {"x": {"method_seen": "DELETE"}}
    assert patched.status == 200
    assert refused.status == 405


async def test_keep_alive_connections_are_reused_across_requests() -> None:
    async with services(s=lambda seen: {"n": 1}) as svc:
        cfg = aggregate_config(svc, calls(x={"service": "s", "path": "/", "group": "x"}))
        async with gateway(cfg) as (port, _):
            for _ in range(5):
                assert (await request(port, "GET", "/screen")).status == 200
            assert svc["s"].connections == 1
            assert len(svc["s"].seen) == 5


async def test_the_access_log_names_the_failed_calls() -> None:
    async with services(a=lambda s: Reply(500, None), b=lambda s: {"b": 1}) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                a={"service": "a", "path": "/", "group": "a", "required": False},
                b={"service": "b", "path": "/", "group": "b"},
            ),
        )
        async with gateway(cfg) as (port, log):
            await request(port, "GET", "/screen")
            await asyncio.sleep(0.05)
    line = orjson.loads(log.getvalue().splitlines()[-1])
    assert line["route"] == "screen"
    assert line["status"] == 200
    assert line["failed_calls"] == ["a"]


async def test_a_hidden_call_feeds_others_and_stays_out_of_the_response() -> None:
    async with services(
        recs=lambda s: {"ids": [3, 1]},
        catalog=lambda s: [{"id": int(i)} for i in s.query["ids"][0].split(",")],
    ) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                related_ids={"service": "recs", "path": "/related", "hidden": True},
                related={
                    "service": "catalog",
                    "path": "/products",
                    "query": {"ids": "{batch}"},
                    "batch": "{calls.related_ids.ids}",
                    "collection": True,
                    "group": "related",
                },
            ),
        )
        async with gateway(cfg) as (port, _):
            answer = await request(port, "GET", "/screen")
    assert answer.json() == {"related": [{"id": 3}, {"id": 1}]}


async def test_a_failed_required_call_ends_the_request_at_once_and_abandons_the_rest() -> None:
    async with services(
        broken=lambda s: Reply(500, None), slow=lambda s: Reply(body={"slow": 1}, delay=1.5)
    ) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                slow={"service": "slow", "path": "/", "group": "slow"},
                broken={"service": "broken", "path": "/", "group": "broken"},
            ),
        )
        async with gateway(cfg) as (port, _):
            started = time.perf_counter()
            failed = await request(port, "GET", "/screen")
            elapsed = time.perf_counter() - started
            # The abandoned call's connection was closed, not left half-used in the pool: the
            # next request still gets a clean one.
            broken_again = await request(port, "GET", "/screen")
    assert failed.status == 502
    assert failed.json()["call"] == "broken"
    assert elapsed < 1.0, f"waited {elapsed:.2f} s for a call whose answer no longer mattered"
    assert broken_again.status == 502


async def test_an_unreachable_required_call_ends_the_request_without_waiting_for_a_slower_one() -> None:
    async with services(
        broken=lambda s: {"never": 1}, slow=lambda s: Reply(body={"slow": 1}, delay=1.5)
    ) as svc:
        dead = {"broken": {"instances": [f"http://127.0.0.1:{dead_port()}"]}}
        cfg = aggregate_config(
            svc,
            calls(
                slow={"service": "slow", "path": "/", "group": "slow"},
                broken={"service": "broken", "path": "/", "group": "broken"},
            ),
            service_overrides=dead,
        )
        async with gateway(cfg) as (port, _):
            started = time.perf_counter()
            failed = await request(port, "GET", "/screen")
            elapsed = time.perf_counter() - started
    assert failed.status == 502
    assert failed.json()["call"] == "broken"
    assert failed.json()["code"] == "connect_failed"
    assert elapsed < 1.0


async def test_an_optional_call_that_fails_first_does_not_cut_a_slower_required_one() -> None:
    async with services(
        broken=lambda s: Reply(500, None), slow=lambda s: Reply(body={"slow": 1}, delay=0.3)
    ) as svc:
        cfg = aggregate_config(
            svc,
            calls(
                slow={"service": "slow", "path": "/", "group": "slow"},
                broken={"service": "broken", "path": "/", "group": "broken", "required": False},
            ),
        )
        async with gateway(cfg) as (port, _):
            answers = [await request(port, "GET", "/screen") for _ in range(2)]
    for answer in answers:
        assert answer.status == 200
        assert answer.json()["slow"] == {"slow": 1}
        assert answer.json()["_meta"]["errors"]["broken"]["status"] == 500


async def test_body_templates_keep_literal_braces_and_a_missing_whole_body_is_a_400() -> None:
    async with services(s=lambda seen: {"got": seen.json()}) as svc:
        literal = calls(
            x={
                "service": "s",
                "method": "POST",
                "path": "/",
                "body": {"t": "{{not a ref}}", "n": [1]},
                "group": "x",
            }
        )
        whole = calls(
            x={"service": "s", "method": "POST", "path": "/", "body": "{body.payload}", "group": "x"}
        )
        async with gateway(aggregate_config(svc, literal)) as (port, _):
            sent = await request(port, "GET", "/screen")
        async with gateway(aggregate_config(svc, whole, match={"methods": ["POST"]})) as (port, _):
            forwarded = await request(port, "POST", "/screen", body=b'{"payload": {"a": [1, 2]}}')
            missing = await request(port, "POST", "/screen", body=b'{"other": 1}')
    assert sent.json() == {"x": {"got": {"t": "{not a ref}", "n": [1]}}}
    assert forwarded.json() == {"x": {"got": {"a": [1, 2]}}}
    assert missing.status == 400
    assert missing.json()["detail"] == "call 'x' failed: the request body has no 'payload'"
