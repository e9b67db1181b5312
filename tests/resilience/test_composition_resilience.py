"""The resilience of the calls the gateway makes itself — aggregate calls and Python endpoints'
service clients — end to end: in-process gateway, real sockets, raw backends that fail.

They share the proxy's guard per service: one breaker, one retry budget, one view of each
instance, whichever path the traffic takes.
"""

from __future__ import annotations

import asyncio
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from resilience_helpers import Seen, answering, backend, get, read_request, running

from conftest import dead_port

FINE = b'{"svc": "fine"}'
RETRY = {"attempts": 3, "backoff": "1ms", "max_backoff": "2ms"}
SERVICE_BREAKER = {"instance": None, "service": {"consecutive_failures": 2, "open_for": "30s"}}


def call(**options: Any) -> dict[str, Any]:
    """An aggregate call to ``svc`` whose answer goes under ``extra``."""
    return {"service": "svc", "path": "/data", "group": "extra", **options}


def compose_config(
    instances: list[int], calls: dict[str, dict[str, Any]], *, deadline: str | None = None, **service: Any
) -> dict[str, Any]:
    """``svc`` (guarded as ``service`` says) behind an aggregate route ``/screen`` with ``calls``
    and a proxy route ``/p/**``; ``ok`` is an instance that always answers."""
    aggregate: dict[str, Any] = {"calls": calls}
    if deadline is not None:
        aggregate["deadline"] = deadline
    return {
        "name": "compose-res",
        "admin": None,
        "services": {"svc": {"instances": [f"http://127.0.0.1:{p}" for p in instances], **service}},
        "routes": [
            {"id": "screen", "match": {"path": "/screen"}, "aggregate": aggregate},
            {"id": "proxy", "match": {"path": "/p/**"}, "proxy": {"service": "svc", "strip_prefix": "/p"}},
        ],
    }


def body(reply: Any) -> Any:
    return orjson.loads(reply.body)


def lines(seen: Seen, method: bytes = b"") -> list[bytes]:
    return [line for line, _, _ in seen if line.startswith(method)]


# --------------------------------------------------------------------------- breakers


async def test_an_open_service_breaker_fails_an_optional_call_fast_and_its_fallback_stands_in() -> None:
    seen: Seen = []
    calls = {"extra": call(required=False, fallback={"none": True})}
    async with (
        backend(answering("bad", seen, 500, b"{}")) as port,
        running(compose_config([port], calls, breaker=SERVICE_BREAKER)) as (gp, _),
    ):
        failing = [body(await get(gp, "/screen")) for _ in range(2)]
        refused = await get(gp, "/screen")
    assert [f["_meta"]["errors"]["extra"] for f in failing] == [
        {"status": 500, "reason": "svc answered 500"}
    ] * 2
    assert refused.status == 200
    assert refused.headers[b"x-edgeway-completed"] == b"false"
    assert body(refused) == {
        "extra": {"none": True},
        "_meta": {
            "completed": False,
            "errors": {
                "extra": {
                    "status": 503,
                    "reason": "svc: the circuit breaker of service 'svc' is open",
                    "code": "circuit_open",
                }
            },
        },
    }
    assert len(seen) == 2  # the third call never reached the service


async def test_a_required_call_refused_by_the_breaker_answers_503_with_retry_after() -> None:
    seen: Seen = []
    async with (
        backend(answering("bad", seen, 500, b"{}")) as port,
        running(compose_config([port], {"extra": call()}, breaker=SERVICE_BREAKER)) as (gp, _),
    ):
        failing = [await get(gp, "/screen") for _ in range(2)]
        refused = await get(gp, "/screen")
    assert [f.status for f in failing] == [502, 502]
    assert refused.status == 503
    assert refused.headers[b"content-type"] == b"application/problem+json"
    assert 28 <= int(refused.headers[b"retry-after"]) <= 30
    problem = body(refused)
    assert problem["call"] == "extra"
    assert problem["code"] == "circuit_open"
    assert "circuit breaker of service 'svc' is open" in problem["detail"]
    assert len(seen) == 2


async def test_the_breaker_is_one_per_service_whichever_path_the_traffic_takes() -> None:
    seen: Seen = []
    async with (
        backend(answering("bad", seen, 500, b"{}")) as port,
        running(compose_config([port], {"extra": call()}, breaker=SERVICE_BREAKER)) as (gp, gw),
    ):
        proxied = [await get(gp, "/p/x") for _ in range(2)]  # two failures through the proxy
        composed = await get(gp, "/screen")  # the aggregate call meets the open breaker
        proxied_after = await get(gp, "/p/x")
        exposition = gw.env.metrics.exposition()[0].decode()
    assert [r.status for r in proxied] == [500, 500]
    assert composed.status == 503
    assert body(composed)["code"] == "circuit_open"
    assert proxied_after.status == 503
    assert len(seen) == 2
    assert 'edgeway_breaker_state{instance="*",service="svc"} 2.0' in exposition


async def test_each_attempt_feeds_the_instance_breaker_which_takes_a_bad_instance_out() -> None:
    bad: Seen = []
    good: Seen = []
    breaker = {"instance": {"consecutive_failures": 2, "open_for": "30s"}, "service": None}
    calls = {"extra": call(required=False)}
    async with (
        backend(answering("bad", bad, 500, b"{}")) as b1,
        backend(answering("good", good, 200, FINE)) as b2,
        running(compose_config([b1, b2], calls, breaker=breaker)) as (gp, gw),
    ):
        replies = [body(await get(gp, "/screen")) for _ in range(10)]
        exposition = gw.env.metrics.exposition()[0].decode()
    assert len(bad) == 2
    assert len(good) == 8
    assert sum(1 for r in replies if "_meta" in r) == 2
    assert replies[-1] == {"extra": {"svc": "fine"}}
    assert f'edgeway_breaker_state{{instance="127.0.0.1:{b1}",service="svc"}} 2.0' in exposition


# --------------------------------------------------------------------------- retries


async def test_idempotent_calls_retry_on_another_instance_and_a_post_that_was_sent_never_does() -> None:
    busy: Seen = []
    fine: Seen = []
    calls = {"extra": call()}
    posts = {"extra": call(method="POST", body={"n": 1})}
    async with (
        backend(answering("busy", busy, 503, b"{}")) as b1,
        backend(answering("fine", fine, 200, FINE)) as b2,
    ):
        async with running(compose_config([b1, b2], calls, retry=RETRY)) as (gp, gw):
            gets = [await get(gp, "/screen") for _ in range(4)]
            exposition = gw.env.metrics.exposition()[0].decode()
        async with running(compose_config([b1, b2], posts, retry=RETRY)) as (gp, _):
            posted = [await get(gp, "/screen") for _ in range(4)]
    assert [r.status for r in gets] == [200] * 4
    assert all(body(r) == {"extra": {"svc": "fine"}} for r in gets)
    # Round robin sends each call to the busy one first (the retry moved the turn on).
    assert len(lines(busy, b"GET")) == 4
    assert len(lines(fine, b"GET")) == 4
    assert 'edgeway_upstream_retries_total{reason="status",service="svc"} 4.0' in exposition
    busy_posts, fine_posts = lines(busy, b"POST"), lines(fine, b"POST")
    assert len(busy_posts) + len(fine_posts) == 4  # a POST is sent once
    assert busy_posts
    assert sorted(r.status for r in posted) == [200] * len(fine_posts) + [502] * len(busy_posts)


async def test_a_call_that_never_left_is_retried_whatever_its_method() -> None:
    fine: Seen = []
    posts = {"extra": call(method="POST", body={"n": "{query.n}"})}
    async with (
        backend(answering("fine", fine, 200, FINE)) as port,
        running(compose_config([dead_port(), port], posts, retry=RETRY)) as (gp, _),
    ):
        replies = [await get(gp, f"/screen?n={i}") for i in range(4)]
    assert [r.status for r in replies] == [200] * 4
    assert [orjson.loads(b) for _, _, b in fine] == [{"n": str(i)} for i in range(4)]


async def test_retries_of_calls_stay_within_the_retry_budget() -> None:
    busy_a: Seen = []
    busy_b: Seen = []
    retry = {**RETRY, "budget": {"percent": 10, "min_per_second": 0}}
    calls = {"extra": call(required=False)}
    async with (
        backend(answering("a", busy_a, 503, b"{}")) as b1,
        backend(answering("b", busy_b, 503, b"{}")) as b2,
        running(compose_config([b1, b2], calls, retry=retry)) as (gp, gw),
    ):
        replies = [body(await get(gp, "/screen")) for _ in range(50)]
        exposition = gw.env.metrics.exposition()[0].decode()
    assert all(r["_meta"]["errors"]["extra"]["status"] == 503 for r in replies)
    assert 50 < len(busy_a) + len(busy_b) <= 55  # at most 10% more, not 3x (attempts: 3)
    assert "edgeway_retry_budget_exhausted_total" in exposition


def hanging(seen: Seen) -> Any:
    """An instance that reads requests and never answers."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                seen.append(await read_request(r))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    return handler


async def test_a_call_to_a_hanging_instance_is_retried_within_its_timeout() -> None:
    hung: Seen = []
    fine: Seen = []
    timeouts = {"connect": "1s", "first_byte": "150ms", "total": "2s"}
    async with (
        backend(hanging(hung)) as b1,
        backend(answering("fine", fine, 200, FINE)) as b2,
        running(compose_config([b1, b2], {"extra": call()}, retry=RETRY, timeouts=timeouts)) as (gp, _),
    ):
        replies = [await get(gp, "/screen") for _ in range(4)]
    assert [r.status for r in replies] == [200] * 4
    assert len(hung) == 4  # round robin: each call tried the hanging one first
    assert len(fine) == 4
    # Each attempt carries what is left of the call's budget.
    budgets = [int(headers[b"x-edgeway-deadline-ms"]) for _, headers, _ in hung + fine]
    assert all(0 < b <= 2000 for b in budgets)
    assert min(int(h[b"x-edgeway-deadline-ms"]) for _, h, _ in fine) <= 1860  # a retry, after 150 ms


async def test_the_endpoint_deadline_ends_a_call_without_a_retry_and_without_blaming_the_instance() -> None:
    hung: Seen = []
    fine: Seen = []
    timeouts = {"connect": "1s", "first_byte": "1s", "total": "2s"}
    breaker = {"instance": {"consecutive_failures": 1, "open_for": "30s"}, "service": None}
    async with backend(hanging(hung)) as b1, backend(answering("fine", fine, 200, FINE)) as b2:
        cfg = compose_config(
            [b1, b2],
            {"extra": call(required=False)},
            deadline="150ms",
            retry=RETRY,
            breaker=breaker,
            timeouts=timeouts,
        )
        async with running(cfg) as (gp, gw):
            replies = [body(await get(gp, "/screen")) for _ in range(6)]
            ready = gw.ready()
    cut = [r["_meta"]["errors"]["extra"] for r in replies if "_meta" in r]
    assert len(hung) == 3  # round robin: every other call, never retried past the deadline
    assert (
        cut
        == [{"status": 504, "reason": "svc: upstream deadline timeout after 0.15s", "code": "deadline"}] * 3
    )
    assert all(int(h[b"x-edgeway-deadline-ms"]) <= 150 for _, h, _ in hung + fine)
    assert ready == (True, {"services": {"svc": 2}})  # the hanging instance was not taken out


# --------------------------------------------------------------------------- concurrency


async def test_a_full_concurrency_bound_refuses_a_call_as_overloaded() -> None:
    concurrency = {"max_concurrent": 1, "queue": 0}
    async with (
        backend(answering("slow", [], 200, FINE, delay=0.3)) as port,
        running(compose_config([port], {"extra": call(required=False)}, concurrency=concurrency)) as (gp, gw),
    ):
        first, second = await asyncio.gather(get(gp, "/screen"), get(gp, "/screen"))
        exposition = gw.env.metrics.exposition()[0].decode()
    answers = sorted((body(first), body(second)), key=lambda b: "_meta" in b)
    assert answers[0] == {"extra": {"svc": "fine"}}
    refused = answers[1]["_meta"]["errors"]["extra"]
    assert refused["status"] == 503
    assert refused["code"] == "overloaded"
    assert 'edgeway_shed_requests_total{name="svc",scope="service"} 1.0' in exposition


async def test_a_call_waits_in_the_concurrency_queue_for_a_slot_then_goes() -> None:
    seen: Seen = []

    concurrency = {"max_concurrent": 1, "queue": 1, "max_wait": "2s"}
    async with (
        backend(answering("slow", seen, 200, FINE, delay=0.2)) as port,
        running(compose_config([port], {"extra": call()}, concurrency=concurrency)) as (gp, _),
    ):
        started = time.monotonic()
        answers = await asyncio.gather(get(gp, "/screen"), get(gp, "/screen"))
        elapsed = time.monotonic() - started
    assert [body(a) for a in answers] == [{"extra": {"svc": "fine"}}] * 2
    assert len(seen) == 2
    assert elapsed >= 0.4  # one after the other: the second waited for the first's slot


# --------------------------------------------------------------------------- Python endpoints


ENDPOINT = """
    from edgeway.bff import ServiceCallError, endpoint

    @endpoint("GET", "/py", name="py_{u}")
    async def py(req):
        answer = await req.services.svc.get("/data")
        return {"status": answer.status}

    @endpoint("GET", "/caught", name="caught_{u}")
    async def caught(req):
        try:
            await req.services.svc.get("/data")
        except ServiceCallError as exc:
            return {"code": exc.code, "status": exc.status, "retry_after": exc.retry_after}
        return {"code": None}
"""


def endpoint_config(tmp_path: Path, instances: list[int], **service: Any) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    module = f"bff_res_{suffix}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(ENDPOINT).replace("{u}", suffix))
    return {
        "name": "py-res",
        "admin": None,
        "python": {"modules": [module], "paths": [str(tmp_path)]},
        "services": {"svc": {"instances": [f"http://127.0.0.1:{p}" for p in instances], **service}},
        "routes": [
            {"match": {"path": "/py", "methods": ["GET"]}, "endpoint": {"name": f"py_{suffix}"}},
            {"match": {"path": "/caught", "methods": ["GET"]}, "endpoint": {"name": f"caught_{suffix}"}},
        ],
    }


async def test_python_endpoint_clients_go_through_the_services_breaker(tmp_path: Path) -> None:
    seen: Seen = []
    async with (
        backend(answering("bad", seen, 500, b"{}")) as port,
        running(endpoint_config(tmp_path, [port], breaker=SERVICE_BREAKER)) as (gp, _),
    ):
        answered = [body(await get(gp, "/py")) for _ in range(2)]
        uncaught = await get(gp, "/py")
        caught = body(await get(gp, "/caught"))
    assert answered == [{"status": 500}] * 2
    assert uncaught.status == 503
    assert 28 <= int(uncaught.headers[b"retry-after"]) <= 30
    assert body(uncaught)["code"] == "circuit_open"
    assert caught["code"] == "circuit_open"
    assert caught["status"] == 503
    assert 28 <= caught["retry_after"] <= 30
    assert len(seen) == 2


async def test_python_endpoint_clients_retry_idempotent_calls(tmp_path: Path) -> None:
    busy: Seen = []
    fine: Seen = []
    async with (
        backend(answering("busy", busy, 503, b"{}")) as b1,
        backend(answering("fine", fine, 200, FINE)) as b2,
        running(endpoint_config(tmp_path, [b1, b2], retry=RETRY)) as (gp, _),
    ):
        answers = [body(await get(gp, "/py")) for _ in range(4)]
    assert answers == [{"status": 200}] * 4
    assert len(busy) == 4
    assert len(fine) == 4
