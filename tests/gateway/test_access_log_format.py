"""The access log's two ways to write a line give the same JSON.

Most lines go into the buffer as pieces of JSON text (AccessLog.record); a line with text that needs JSON
escaping, or extra fields, goes through a dict and orjson. Hypothesis feeds both arbitrary paths,
request ids, clients and log fields and compares the parsed lines.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edgeway.gateway.core.access_log import AccessLog
from edgeway.http.body import buffered_body
from edgeway.http.exchange import Exchange
from edgeway.http.limits import ServerLimits
from edgeway.http.listener import Listener
from edgeway.http.server import ServerProtocol

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


async def _nothing(ex: Exchange) -> None:
    return None


def make_exchange(method: bytes, path: bytes, client: str) -> Exchange:
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        proto = ServerProtocol(_nothing, ServerLimits(), Listener(_nothing, ServerLimits()))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    return Exchange(proto, method, path, path, b"", b"1.1", [], b"a", buffered_body(b""), client)


def written(log: AccessLog, out: io.BytesIO) -> dict[str, Any]:
    log.flush()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    out.seek(0)
    out.truncate()
    parsed: dict[str, Any] = json.loads(lines[0])
    return parsed


def comparable(line: dict[str, Any]) -> dict[str, Any]:
    # Both are taken at the moment of writing: checked for form, not compared.
    assert STAMP.fullmatch(line.pop("time"))
    assert line.pop("duration_ms") >= 0
    return line


text = st.binary(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from([b"GET", b"POST", b"DELETE", b"PROPFIND"]),
    path=st.one_of(text, st.from_regex(rb"/[a-z0-9/._-]{0,30}", fullmatch=True)),
    # The gateway replaces a malformed request id before anything is logged (Gateway._prepare).
    request_id=st.from_regex(rb"[A-Za-z0-9._:+=/-]{1,40}", fullmatch=True),
    client=st.one_of(st.just("127.0.0.1"), st.just("::1"), st.text(max_size=10)),
    route=st.one_of(st.none(), st.text(max_size=12)),
    upstream=st.one_of(st.none(), st.text(max_size=12)),
    extra=st.dictionaries(st.sampled_from(["attempts", "push", "error"]), st.integers(0, 9), max_size=2),
    trace=st.sampled_from([(b"a" * 32, b"b" * 16), (b"", b"")]),
    status=st.sampled_from([200, 404, 499, 502, 504]),
    received=st.integers(0, 1 << 40),
    sent=st.integers(0, 1 << 40),
)
def test_the_template_and_orjson_write_the_same_line(
    method: bytes,
    path: bytes,
    request_id: bytes,
    client: str,
    route: str | None,
    upstream: str | None,
    extra: dict[str, int],
    trace: tuple[bytes, bytes],
    status: int,
    received: int,
    sent: int,
) -> None:
    out = io.BytesIO()
    log = AccessLog('svc "quoted" é', out)
    ex = make_exchange(method, path, client)
    ex.request_id = request_id
    ex.status = status
    ex.bytes_out = sent
    ex.body.received = received
    if upstream is not None:
        ex.log["upstream"] = upstream
    ex.log.update(extra)
    log.record(ex, route, *trace)
    line = comparable(written(log, out))
    expected = comparable(json.loads(json.dumps(log.entry(ex, route, *trace))))
    assert line == expected


def test_a_plain_proxied_request_takes_the_template() -> None:
    out = io.BytesIO()
    log = AccessLog("gw", out)
    ex = make_exchange(b"GET", b"/users/7", "10.0.0.1")
    ex.request_id, ex.status, ex.bytes_out = b"req-1", 200, 64
    ex.log["upstream"] = "10.0.0.9:8080"
    log.record(ex, "users", b"a" * 32, b"b" * 16)
    log.flush()
    raw = out.getvalue()
    # The template writes numbers with three decimals; orjson would write the shortest form.
    assert re.search(rb'"duration_ms":\d+\.\d{3},', raw)
    assert comparable(json.loads(raw)) == {
        "level": "info",
        "service": "gw",
        "request_id": "req-1",
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "message": "request",
        "client": "10.0.0.1",
        "method": "GET",
        "path": "/users/7",
        "route": "users",
        "status": 200,
        "upstream": "10.0.0.9:8080",
        "bytes_in": 0,
        "bytes_out": 64,
    }
