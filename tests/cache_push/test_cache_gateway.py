"""The response cache end to end: a real gateway in front of a real backend that counts the
requests reaching it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

import pytest
from cache_push_helpers import Reply, http, running_backend, running_gateway, with_test_identity
from gateway_helpers import read_request

_counter = itertools.count()


def cfg(port: int, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    rule = {"ttl": "60s", **(cache or {})}
    routes = [
        {"id": "items", "match": {"path": "/items/**"}, "proxy": {"service": "b"}, "cache": rule},
        {
            "id": "other",
            "match": {"path": "/other/**"},
            "proxy": {"service": "b", "rewrite": "/items/{**}"},
            "cache": rule,
        },
        {"id": "plain", "match": {"path": "/plain/**"}, "proxy": {"service": "b"}},
    ]
    return {
        "name": "cache-gw",
        "services": {"b": {"instances": [f"http://127.0.0.1:{port}"]}},
        "routes": routes,
    }


def numbered(*headers: tuple[bytes, bytes], status: int = 200) -> Any:
    """A responder whose body says how many requests it has answered (so a cached body shows)."""
    n = itertools.count(1)

    async def respond(line: bytes, h: dict[bytes, bytes]) -> Reply:
        return status, [(b"content-type", b"text/plain"), *headers], b"response %d" % next(n)

    return respond


async def test_a_second_get_is_a_hit_with_age_and_its_own_request_id() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        s1, h1, body1 = await http(g.port, "GET", "/items/1", {"X-Request-ID": "first-request-id-1"})
        s2, h2, body2 = await http(g.port, "GET", "/items/1", {"X-Request-ID": "second-request-id-2"})
    assert (s1, s2) == (200, 200)
    assert body1 == body2 == b"response 1"
    assert h1["x-cache"] == "MISS"
    assert h2["x-cache"] == "HIT"
    assert h2["age"] == "0"
    assert h2["x-request-id"] == "second-request-id-2"
    assert h2["content-type"] == "text/plain"
    assert b.count() == 1


async def test_age_counts_from_the_upstream_age() -> None:
    async with running_backend(numbered((b"age", b"7"))) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/1")
        _, h, _ = await http(g.port, "GET", "/items/1")
    assert h["x-cache"] == "HIT"
    assert int(h["age"]) in (7, 8)
    assert h["age"].count("7") + h["age"].count("8") == 1  # one Age header, not the stored one too


async def test_entries_expire_after_the_ttl() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port, {"ttl": "300ms"})) as g:
        _, _, first = await http(g.port, "GET", "/items/1")
        _, h, again = await http(g.port, "GET", "/items/1")
        await asyncio.sleep(0.4)
        _, h_late, late = await http(g.port, "GET", "/items/1")
    assert (first, again, late) == (b"response 1", b"response 1", b"response 2")
    assert h["x-cache"] == "HIT"
    assert h_late["x-cache"] == "MISS"


async def test_origin_max_age_and_s_maxage_set_freshness_and_s_maxage_wins() -> None:
    async with (
        running_backend(numbered((b"cache-control", b"max-age=600, s-maxage=1"))) as b,
        running_gateway(cfg(b.port, {"ttl": "10m"})) as g,
    ):
        await http(g.port, "GET", "/items/1")
        _, hit, _ = await http(g.port, "GET", "/items/1")
        await asyncio.sleep(1.1)
        _, later, body = await http(g.port, "GET", "/items/1")
    assert hit["x-cache"] == "HIT"
    assert later["x-cache"] == "MISS"
    assert body == b"response 2"


async def test_max_ttl_caps_the_origins_lifetime() -> None:
    async with (
        running_backend(numbered((b"cache-control", b"max-age=3600"))) as b,
        running_gateway(cfg(b.port, {"ttl": "1s", "max_ttl": "300ms"})) as g,
    ):
        await http(g.port, "GET", "/items/1")
        await asyncio.sleep(0.4)
        _, h, _ = await http(g.port, "GET", "/items/1")
    assert h["x-cache"] == "MISS"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([(b"cache-control", b"no-store")], 200),
        ([(b"cache-control", b"private")], 200),
        ([(b"Cache-Control", b"public, NO-CACHE")], 200),
        ([(b"cache-control", b"max-age=0")], 200),
        ([(b"cache-control", b"max-age=5, max-age=9")], 200),
        ([(b"set-cookie", b"session=abc")], 200),
        ([(b"vary", b"Accept-Encoding")], 200),
        ([(b"vary", b"*")], 200),
        ([(b"x-edgeway-completed", b"false")], 200),
        ([(b"expires", b"0")], 200),
        ([], 500),
        ([], 201),
    ],
)
async def test_responses_that_must_not_be_stored_are_not(
    headers: list[tuple[bytes, bytes]], status: int
) -> None:
    async with running_backend(numbered(*headers, status=status)) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/1")
        _, h, body = await http(g.port, "GET", "/items/1")
    assert h["x-cache"] == "MISS"
    assert body == b"response 2"
    assert b.count() == 2


async def test_cacheable_error_statuses_are_stored() -> None:
    async with running_backend(numbered(status=404)) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/missing")
        status, h, _ = await http(g.port, "GET", "/items/missing")
    assert (status, h["x-cache"]) == (404, "HIT")


async def test_private_qualified_with_set_cookie_stores_the_response_without_the_cookie() -> None:
    async with (
        running_backend(numbered((b"cache-control", b'private="set-cookie"'), (b"set-cookie", b"s=1"))) as b,
        running_gateway(cfg(b.port)) as g,
    ):
        _, first, _ = await http(g.port, "GET", "/items/1")
        _, hit, _ = await http(g.port, "GET", "/items/1")
    assert first["set-cookie"] == "s=1"  # the response that made the entry is untouched
    assert hit["x-cache"] == "HIT"
    assert "set-cookie" not in hit


async def test_no_entry_is_shared_between_routes_queries_or_vary_values() -> None:
    rule = {"vary": ["Accept-Language"], "ignore_query": ["utm_source"]}
    async with (
        running_backend(numbered((b"vary", b"accept-language"))) as b,
        running_gateway(cfg(b.port, rule)) as g,
    ):

        async def body(target: str, **headers: str) -> bytes:
            return (await http(g.port, "GET", target, headers))[2]

        a = await body("/items/1?b=2&a=1")
        assert await body("/items/1?a=1&b=2") == a  # same parameters, other order
        assert await body("/items/1?a=%31&b=2") == a  # %31 is the unreserved "1"
        slash = await body("/items/1?a=%2f&b=2")
        assert slash != a
        assert await body("/items/1?a=%2F&b=2") == slash  # hex case does not matter
        assert await body("/items/1?a=/&b=2") != slash  # a reserved character stays encoded
        assert await body("/items/1?b=2&a=1&utm_source=mail") == a  # ignored parameter
        assert await body("/other/1?b=2&a=1") != a  # same upstream path, another route
        assert await body("/items/1?b=2&a=1&a=0") != a
        fr = await body("/items/1?b=2&a=1", **{"Accept-Language": "fr"})
        assert fr not in (a,)
        assert await body("/items/1?b=2&a=1", **{"Accept-Language": "fr"}) == fr
        assert await body("/items/2?b=2&a=1") != a
    assert b.count() == 7


async def test_repeated_parameters_keep_their_order_in_the_key() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        first = (await http(g.port, "GET", "/items/1?a=1&a=2"))[2]
        second = (await http(g.port, "GET", "/items/1?a=2&a=1"))[2]
        again = (await http(g.port, "GET", "/items/1?a=%7e&a=1"))[2]
        tilde = (await http(g.port, "GET", "/items/1?a=~&a=1"))[2]
    assert first != second
    assert again == tilde  # %7E is an unreserved character: the same query


async def test_authenticated_callers_never_share_entries_unless_the_rule_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_test_identity(monkeypatch)
    async with running_backend(numbered()) as b:
        async with running_gateway(cfg(b.port)) as g:
            alice = (await http(g.port, "GET", "/items/me", {"X-Test-User": "alice"}))[2]
            bob = (await http(g.port, "GET", "/items/me", {"X-Test-User": "bob"}))[2]
            alice_again = await http(g.port, "GET", "/items/me", {"X-Test-User": "alice"})
            anonymous = (await http(g.port, "GET", "/items/me"))[2]
        assert len({alice, bob, anonymous}) == 3
        assert alice_again[1]["x-cache"] == "HIT"
        assert alice_again[2] == alice
        async with running_gateway(cfg(b.port, {"shared": True})) as g:
            first = await http(g.port, "GET", "/items/catalog", {"X-Test-User": "alice"})
            second = await http(g.port, "GET", "/items/catalog", {"X-Test-User": "bob"})
        assert second[1]["x-cache"] == "HIT"
        assert second[2] == first[2]


async def test_authorization_the_gateway_did_not_verify_is_stored_only_when_public() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/1", {"Authorization": "Bearer x"})
        _, h, _ = await http(g.port, "GET", "/items/1", {"Authorization": "Bearer x"})
    assert h["x-cache"] == "MISS"
    async with (
        running_backend(numbered((b"cache-control", b"public, max-age=60"))) as b,
        running_gateway(cfg(b.port)) as g,
    ):
        await http(g.port, "GET", "/items/1", {"Authorization": "Bearer x"})
        _, h, _ = await http(g.port, "GET", "/items/1")
    assert h["x-cache"] == "HIT"


async def test_head_is_answered_from_a_stored_get_and_other_methods_pass() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        _, head_miss, _ = await http(g.port, "HEAD", "/items/1")
        await http(g.port, "GET", "/items/1")
        status, head_hit, body = await http(g.port, "HEAD", "/items/1")
        await http(g.port, "POST", "/items/1", {"Content-Length": "0"})
        await http(g.port, "POST", "/items/1", {"Content-Length": "0"})
    assert head_miss["x-cache"] == "MISS"
    assert (status, head_hit["x-cache"], body) == (200, "HIT", b"")
    assert head_hit["content-length"] == str(len(b"response 2"))
    assert b.count(b"HEAD") == 1
    assert b.count(b"POST") == 2


@pytest.mark.parametrize(
    ("conditional", "status"),
    [
        ({"If-None-Match": '"v1"'}, 304),
        ({"If-None-Match": 'W/"v0", W/"v1"'}, 304),  # weak comparison, a list
        ({"If-None-Match": "*"}, 304),
        ({"If-None-Match": '"v2"'}, 200),
        ({"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"}, 304),
        ({"If-Modified-Since": "Tue, 20 Oct 2015 07:28:00 GMT"}, 200),
        ({"If-Modified-Since": "not a date"}, 200),
    ],
)
async def test_a_hit_for_a_client_that_has_the_response_is_304(
    conditional: dict[str, str], status: int
) -> None:
    validators = ((b"etag", b'"v1"'), (b"last-modified", b"Wed, 21 Oct 2015 07:28:00 GMT"))
    async with running_backend(numbered(*validators)) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/1")
        got, h, body = await http(g.port, "GET", "/items/1", conditional)
    assert (got, h["x-cache"]) == (status, "HIT")
    if status == 304:
        assert body == b""
        assert h["etag"] == '"v1"'
        assert "content-type" not in h
    else:
        assert body == b"response 1"
    assert b.count() == 1


async def test_ranges_pass_through() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/1")
        _, h, body = await http(g.port, "GET", "/items/1", {"Range": "bytes=0-3"})
    assert "x-cache" not in h
    assert body == b"response 2"


async def test_a_streamed_response_larger_than_the_entry_limit_passes_through_uncached() -> None:
    big = bytes(range(256)) * 400  # 100 KiB, sent chunked

    async def respond(line: bytes, h: dict[bytes, bytes]) -> Reply:
        return 200, [(b"transfer-encoding", b"chunked")], big

    async with running_backend(respond) as b, running_gateway(cfg(b.port, {"max_entry_bytes": "64KiB"})) as g:
        _, h1, body1 = await http(g.port, "GET", "/items/big")
        _, h2, body2 = await http(g.port, "GET", "/items/big")
    assert body1 == body2 == big
    assert (h1["x-cache"], h2["x-cache"]) == ("MISS", "MISS")
    assert b.count() == 2


async def test_a_streamed_response_within_the_limit_is_stored_whole() -> None:
    body = b"x" * 5000

    async def respond(line: bytes, h: dict[bytes, bytes]) -> Reply:
        return 200, [(b"transfer-encoding", b"chunked")], body

    async with running_backend(respond) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/items/s")
        _, h, cached = await http(g.port, "GET", "/items/s")
    assert h["x-cache"] == "HIT"
    assert cached == body
    assert h["content-length"] == "5000"


async def test_concurrent_misses_make_one_upstream_call() -> None:
    n = itertools.count(1)

    async def slow(line: bytes, h: dict[bytes, bytes]) -> Reply:
        number = next(n)
        await asyncio.sleep(0.3)
        return 200, [], b"response %d" % number

    async with running_backend(slow) as b, running_gateway(cfg(b.port)) as g:
        results = await asyncio.gather(*(http(g.port, "GET", "/items/hot") for _ in range(20)))
    assert b.count() == 1
    assert {body for _, _, body in results} == {b"response 1"}
    assert sorted(h["x-cache"] for _, h, _ in results) == ["HIT"] * 19 + ["MISS"]


@pytest.mark.parametrize(("failure", "leader_status"), [("503", 503), ("reset", 502)])
async def test_a_failing_leader_does_not_poison_its_waiters(failure: str, leader_status: int) -> None:
    calls = itertools.count(1)

    async def first_fails(line: bytes, h: dict[bytes, bytes]) -> Reply:
        if next(calls) > 1:
            return 200, [], b"fine"
        await asyncio.sleep(0.3)
        if failure == "reset":
            raise ConnectionResetError  # the backend closes without answering
        return 503, [], b"leader failed"

    async with running_backend(first_fails) as b, running_gateway(cfg(b.port)) as g:
        leader = asyncio.create_task(http(g.port, "GET", "/items/x"))
        await asyncio.sleep(0.1)
        waiters = await asyncio.gather(*(http(g.port, "GET", "/items/x") for _ in range(5)))
        first = await leader
    assert first[0] == leader_status
    assert {(status, body) for status, _, body in waiters} == {(200, b"fine")}


async def test_a_response_cut_mid_body_is_not_stored() -> None:
    calls = itertools.count(1)

    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        if next(calls) == 1:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
            await w.drain()
            await asyncio.sleep(0.05)
            w.close()  # the upstream dies mid-body
            return
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await w.drain()
        w.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        async with running_gateway(cfg(port)) as g:
            with contextlib.suppress(ValueError, IndexError):
                await http(g.port, "GET", "/items/1")  # a truncated response
            status, h, body = await http(g.port, "GET", "/items/1")
    finally:
        server.close()
    assert (status, h["x-cache"], body) == (200, "MISS", b"ok")


async def test_a_waiter_goes_upstream_itself_after_the_coalesce_timeout() -> None:
    calls = itertools.count(1)

    async def first_slow(line: bytes, h: dict[bytes, bytes]) -> Reply:
        if next(calls) == 1:
            await asyncio.sleep(1.0)
            return 200, [], b"slow"
        return 200, [], b"fast"

    async with (
        running_backend(first_slow) as b,
        running_gateway(cfg(b.port, {"coalesce_timeout": "200ms"})) as g,
    ):
        leader = asyncio.create_task(http(g.port, "GET", "/items/x"))
        await asyncio.sleep(0.1)
        started = asyncio.get_running_loop().time()
        status, h, body = await http(g.port, "GET", "/items/x")
        waited = asyncio.get_running_loop().time() - started
        await leader
    assert (status, h["x-cache"], body) == (200, "MISS", b"fast")
    assert 0.15 < waited < 0.8


async def test_client_no_cache_is_ignored_by_default_and_refreshes_when_honored() -> None:
    async with running_backend(numbered()) as b:
        async with running_gateway(cfg(b.port)) as g:
            await http(g.port, "GET", "/items/1")
            _, h, _ = await http(g.port, "GET", "/items/1", {"Cache-Control": "no-cache"})
        assert h["x-cache"] == "HIT"
        async with running_gateway(cfg(b.port, {"client_directives": "honor"})) as g:
            await http(g.port, "GET", "/items/1")
            _, refreshed, body = await http(g.port, "GET", "/items/1", {"Cache-Control": "no-cache"})
            _, after, again = await http(g.port, "GET", "/items/1")
            status, _, _ = await http(g.port, "GET", "/items/2", {"Cache-Control": "only-if-cached"})
            _, _, unstored = await http(g.port, "GET", "/items/3", {"Cache-Control": "no-store"})
            _, _, fresh3 = await http(g.port, "GET", "/items/3")
    assert refreshed["x-cache"] == "MISS"
    assert (after["x-cache"], again) == ("HIT", body)  # the refreshed response replaced the entry
    assert status == 504
    assert unstored != fresh3


async def test_routes_without_cache_are_untouched() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        await http(g.port, "GET", "/plain/1")
        _, h, _ = await http(g.port, "GET", "/plain/1")
    assert "x-cache" not in h
    assert b.count() == 2


async def test_hits_misses_and_bytes_are_metrics() -> None:
    async with running_backend(numbered()) as b, running_gateway(cfg(b.port)) as g:
        for _ in range(3):
            await http(g.port, "GET", "/items/1")
        await http(g.port, "GET", "/items/2")
        text, _ = g.gw.env.metrics.exposition()
    lines = text.decode()
    assert 'edgeway_gateway_cache_requests_total{result="hit",route="items"} 2.0' in lines
    assert 'edgeway_gateway_cache_requests_total{result="miss",route="items"} 2.0' in lines
    assert 'edgeway_gateway_cache_stored_total{route="items"} 2.0' in lines
    assert "edgeway_gateway_cache_entries 2.0" in lines
    assert "edgeway_gateway_cache_bytes " in lines
