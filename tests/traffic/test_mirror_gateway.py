"""Mirroring through a real gateway: the shadow service receives marked copies (head and body,
without the client's hop-by-hop headers), a slow or dead shadow never delays or fails the real
request, copies are bounded in flight and sampled, and every copy's outcome is counted."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from traffic_helpers import Client, Recorded, Shadow, answers, instances, running, servers, traffic, within

from conftest import dead_port


def mirror_config(real: Shadow, shadow_url: str, **mirror: Any) -> dict[str, Any]:
    return {
        "services": {
            "real": instances(real),
            "shadow": {"instances": [shadow_url], "timeouts": {"connect": "1s"}},
        },
        "routes": [
            {
                "id": "orders",
                "match": {"path": "/api/**"},
                "proxy": {
                    "service": "real",
                    "strip_prefix": "/api",
                    "request_headers": {"set": {"X-Edge": "yes"}, "remove": ["X-Secret"]},
                    "mirror": {"service": "shadow", **mirror},
                },
            }
        ],
    }


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def mirrored_once(request: bytes) -> tuple[Recorded, Recorded, str]:
    """What the real service and the shadow received for one ``request`` (answered 200), and
    the shadow's URL."""
    real, shadow = Shadow("real"), Shadow("shadow")
    async with servers(real, shadow), running(mirror_config(real, shadow.url)) as (port, _):
        client = await Client.connect(port)
        client.writer.write(request)
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await client.reader.readexactly(4)
        await eventually(lambda: shadow.answered == 1)
        await client.close()
    [original] = real.seen
    [copy] = shadow.seen
    return original, copy, shadow.url


async def test_the_shadow_receives_a_marked_copy_of_head_and_body() -> None:
    original, copy, shadow_url = await mirrored_once(
        b"POST /api/orders?x=1 HTTP/1.1\r\nHost: shop.test\r\nContent-Type: application/json\r\n"
        b"Content-Length: 11\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\n"
        b"TE: trailers\r\nX-Secret: s3cret\r\nX-Request-ID: req-7\r\nX-Edgeway-Mirror: 0\r\n"
        b'X-Forwarded-For: 6.6.6.6\r\nAuthorization: Bearer t0k\r\n\r\n{"item": 1}'
    )
    assert (copy.method, copy.target, copy.body) == ("POST", "/orders?x=1", b'{"item": 1}')
    assert copy.headers["x-edgeway-mirror"] == "1"
    assert "x-edgeway-mirror" not in original.headers  # only the copy is marked
    assert copy.headers["x-request-id"] == original.headers["x-request-id"] == "req-7"
    assert copy.headers["content-length"] == "11"
    assert copy.headers["content-type"] == "application/json"
    assert copy.headers["authorization"] == "Bearer t0k"
    assert copy.headers["x-edge"] == "yes"  # the route's header edits apply to the copy too
    assert copy.headers["host"] == shadow_url.removeprefix("http://")
    assert copy.headers["x-forwarded-for"] == "127.0.0.1"  # the gateway's rule, not the client's
    for hop in ("x-hop", "keep-alive", "te", "x-secret"):
        assert hop not in copy.headers, hop
    assert "connection" not in copy.headers or "x-hop" not in copy.headers["connection"].lower()
    # A child span of the same trace as the real request.
    assert copy.headers["traceparent"].split("-")[1] == original.headers["traceparent"].split("-")[1]
    assert copy.headers["traceparent"] != original.headers["traceparent"]


async def test_underscore_spellings_of_removed_or_skipped_names_reach_neither_service() -> None:
    # CGI/WSGI servers read X_Secret as X-Secret: the copy follows the proxy's rule for the real one.
    original, copy, _ = await mirrored_once(
        b"GET /api/x HTTP/1.1\r\nHost: shop.test\r\nX_Secret: s3cret\r\n"
        b"X_Forwarded_For: 6.6.6.6\r\nX_Edge: no\r\nX_Plain: kept\r\n\r\n"
    )
    for seen in (original, copy):
        for name in ("x_secret", "x_forwarded_for", "x_edge"):
            assert name not in seen.headers, (name, seen.headers)
        assert seen.headers["x_plain"] == "kept"


async def test_a_slow_shadow_never_holds_the_real_requests() -> None:
    hold = asyncio.Event()
    real, shadow = Shadow("real"), Shadow("shadow", hold=hold)
    async with (
        servers(real, shadow),
        running(mirror_config(real, shadow.url, max_in_flight=100)) as (port, gw),
    ):
        client = await Client.connect(port)
        got = await answers(client, 30, "/api/x")
        # Every real request was answered while the shadow has answered none of its copies.
        assert got == {"real": 30}
        await eventually(lambda: len(shadow.seen) == 30)
        assert shadow.answered == 0
        mirror = traffic(gw).describe()["orders"]["mirror"]
        assert mirror["in_flight"] == 30
        hold.set()
        await eventually(lambda: traffic(gw).describe()["orders"]["mirror"]["in_flight"] == 0)
        assert traffic(gw).describe()["orders"]["mirror"]["outcomes"] == {"2xx": 30}
        await client.close()


async def test_copies_past_the_in_flight_bound_are_dropped_and_a_hung_copy_times_out() -> None:
    hold = asyncio.Event()
    real, shadow = Shadow("real"), Shadow("shadow", hold=hold)
    async with (
        servers(real, shadow),
        running(mirror_config(real, shadow.url, max_in_flight=3, timeout="300ms")) as (port, gw),
    ):
        client = await Client.connect(port)
        assert await answers(client, 10, "/api/x") == {"real": 10}
        await eventually(lambda: len(shadow.seen) == 3)
        outcomes = traffic(gw).describe()["orders"]["mirror"]["outcomes"]
        assert outcomes == {"dropped": 7}
        # The copies' own timeout ends them; the bound frees up and copies flow again.
        await eventually(lambda: traffic(gw).describe()["orders"]["mirror"]["outcomes"].get("timeout") == 3)
        hold.set()
        assert await answers(client, 2, "/api/x") == {"real": 2}
        await eventually(lambda: shadow.answered >= 2)
        text = gw.env.metrics.exposition()[0].decode()
        await client.close()
    assert 'edgeway_mirror_requests_total{outcome="dropped",route="orders",service="shadow"} 7.0' in text
    assert 'edgeway_mirror_requests_total{outcome="timeout",route="orders",service="shadow"} 3.0' in text
    assert 'edgeway_mirror_duration_seconds_count{route="orders",service="shadow"}' in text


async def test_a_dead_shadow_fails_only_its_copies() -> None:
    real = Shadow("real")
    async with servers(real), running(mirror_config(real, f"http://127.0.0.1:{dead_port()}")) as (port, gw):
        client = await Client.connect(port)
        assert await answers(client, 20, "/api/x") == {"real": 20}
        await eventually(lambda: traffic(gw).describe()["orders"]["mirror"]["outcomes"].get("failed") == 20)
        await client.close()


async def test_a_fraction_of_the_requests_is_copied() -> None:
    real, shadow = Shadow("real"), Shadow("shadow")
    async with servers(real, shadow), running(mirror_config(real, shadow.url, fraction=0.25)) as (port, gw):
        traffic(gw).mirrors["orders"].rng = random.Random(5)
        client = await Client.connect(port)
        assert await answers(client, 400, "/api/x") == {"real": 400}
        copies = traffic(gw).mirrors["orders"]
        await eventually(lambda: copies.in_flight == 0)
        await client.close()
    assert within(len(shadow.seen), 400, 0.25), len(shadow.seen)
    assert copies.counts == {"2xx": len(shadow.seen)}


async def test_a_body_over_max_body_is_not_copied_but_the_request_goes_through() -> None:
    real, shadow = Shadow("real"), Shadow("shadow")
    async with servers(real, shadow), running(mirror_config(real, shadow.url, max_body="1KiB")) as (port, gw):
        client = await Client.connect(port)
        for size in (1024, 4096):
            client.writer.write(
                b"PUT /api/blob HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n%b" % (size, b"x" * size)
            )
            head = await client.reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await client.reader.readexactly(4)
        await eventually(lambda: traffic(gw).mirrors["orders"].in_flight == 0)
        await client.close()
        counts = traffic(gw).mirrors["orders"].counts
    assert [len(r.body) for r in real.seen] == [1024, 4096]
    assert [len(r.body) for r in shadow.seen] == [1024]
    assert counts == {"2xx": 1, "skipped": 1}


async def test_a_body_still_arriving_is_copied_once_it_is_in() -> None:
    real, shadow = Shadow("real"), Shadow("shadow")
    async with servers(real, shadow), running(mirror_config(real, shadow.url)) as (port, _):
        client = await Client.connect(port)
        client.writer.write(
            b"POST /api/slow HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        await asyncio.sleep(0.05)  # the gateway has the head and part of the body
        client.writer.write(b"6\r\n world\r\n0\r\n\r\n")
        head = await client.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await client.reader.readexactly(4)
        await eventually(lambda: len(shadow.seen) == 1)
        await client.close()
    assert real.seen[0].body == shadow.seen[0].body == b"hello world"
    assert shadow.seen[0].headers["content-length"] == "11"
    assert "transfer-encoding" not in shadow.seen[0].headers


async def test_the_copy_goes_out_only_once_the_real_request_is_answered() -> None:
    hold = asyncio.Event()
    real, shadow = Shadow("real", hold=hold), Shadow("shadow")
    async with servers(real, shadow), running(mirror_config(real, shadow.url)) as (port, _):
        client = await Client.connect(port)
        answer = asyncio.create_task(client.request("GET", "/api/x"))
        await asyncio.wait_for(real.arrived.wait(), 5)
        await asyncio.sleep(0.05)  # time for a copy to reach the shadow, were it sent already
        assert shadow.seen == []
        hold.set()
        assert (await answer).status == 200
        await eventually(lambda: len(shadow.seen) == 1)
        await client.close()


async def test_a_request_refused_at_once_is_still_copied_and_frees_its_place() -> None:
    real, shadow = Shadow("real"), Shadow("shadow")
    async with servers(real, shadow), running(mirror_config(real, shadow.url)) as (port, gw):
        gw.clusters["real"].endpoints[0].available = False  # no instance: 503 before anything is sent
        client = await Client.connect(port)
        assert await answers(client, 3, "/api/x") == {"503": 3}
        await eventually(lambda: traffic(gw).mirrors["orders"].counts.get("2xx") == 3)
        assert traffic(gw).mirrors["orders"].in_flight == 0
        await client.close()
    assert real.seen == []
    assert len(shadow.seen) == 3


async def test_stopping_a_mirror_abandons_the_copies_still_waiting_for_answers() -> None:
    hold = asyncio.Event()  # the shadow never answers while the mirror stops
    real, shadow = Shadow("real"), Shadow("shadow", hold=hold)
    async with servers(real, shadow):
        config = mirror_config(real, shadow.url, timeout="30s")
        # A guarded service's copies wait for their answers in tasks, which stop() abandons
        # (an unguarded one's settle from callbacks, bounded by the copy's timeout).
        config["services"]["shadow"]["retry"] = {"attempts": 1}
        async with running(config) as (port, gw):
            client = await Client.connect(port)
            assert await answers(client, 3, "/api/x") == {"real": 3}
            await eventually(lambda: len(shadow.seen) == 3)
            mirror = traffic(gw).mirrors["orders"]
            assert mirror.in_flight == 3
            async with asyncio.timeout(5):  # long before the copies' own 30 s timeout
                await mirror.stop()
            # Each copy ended; an abandoned copy is no outcome (not a timeout, not a failure).
            assert mirror.in_flight == 0
            assert mirror.describe()["outcomes"] == {}
            await client.close()
