"""An HTTP/2 request's header list checked and mapped onto a request head (socket-free), and the
connection's abuse budgets."""

from __future__ import annotations

import pytest

from edgeway.http.errors import RequestRejected
from edgeway.http.h2.budget import PINGS, RESETS, FloodBudget
from edgeway.http.h2.request import MalformedRequest, request_head
from edgeway.http.limits import Http2Limits, ServerLimits

Fields = list[tuple[bytes, bytes]]


def fields(*extra: tuple[bytes, bytes], path: bytes = b"/a?b=1", authority: bytes = b"api.test") -> Fields:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", authority),
        *extra,
    ]


def test_a_request_maps_onto_the_head_an_http_1_1_request_gives() -> None:
    head = request_head(
        fields(
            (b"cookie", b"a=1"),
            (b"x-request-id", b"rid"),
            (b"cookie", b"b=2"),
            (b"content-length", b"5"),
            (b"te", b"trailers"),
        ),
        ServerLimits(),
    )
    assert (head.method, head.target, head.path, head.query) == (b"GET", b"/a?b=1", b"/a", b"b=1")
    assert head.host == b"api.test"
    assert head.request_id == b"rid"
    assert head.content_length == 5
    names = [name for name, _ in head.headers]
    assert (b"host", b"api.test") in head.headers  # made from :authority (RFC 9113 §8.3.1)
    assert (b"cookie", b"a=1; b=2") in head.headers  # crumbs joined (§8.2.3)
    assert b"te" not in names
    assert not any(name.startswith(b":") for name in names)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ([(b"X-Upper", b"1")], "invalid field name"),
        ([(b"connection", b"close")], "connection-specific"),
        ([(b"keep-alive", b"1")], "connection-specific"),
        ([(b"upgrade", b"websocket")], "connection-specific"),
        ([(b"transfer-encoding", b"chunked")], "connection-specific"),
        ([(b"te", b"gzip")], "TE other than"),
        ([(b"x-a", b" padded")], "invalid value"),
        ([(b"x-a", b"a\r\nb: c")], "invalid value"),
        ([(b":status", b"200")], "pseudo-header field"),
        ([(b"x-a", b"1"), (b":method", b"POST")], "after a regular one"),
        ([(b"host", b"other.test")], "Host differs"),
        ([(b"content-length", b"1"), (b"content-length", b"2")], "conflicting content-length"),
        ([(b"content-length", b"-1")], "invalid content-length"),
    ],
)
def test_malformed_requests_are_refused(extra: Fields, reason: str) -> None:
    with pytest.raises(MalformedRequest, match=reason):
        request_head(fields(*extra), ServerLimits())


def test_missing_or_repeated_pseudo_headers_are_malformed() -> None:
    with pytest.raises(MalformedRequest, match="no :scheme or :path"):
        request_head([(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a")], ServerLimits())
    with pytest.raises(MalformedRequest, match="twice"):
        request_head([(b":method", b"GET"), (b":method", b"GET")], ServerLimits())
    with pytest.raises(MalformedRequest, match="origin-form"):
        request_head(fields(path=b"http://a/x"), ServerLimits())


def test_limits_answer_as_on_http_1_1() -> None:
    limits = ServerLimits(max_headers=2, max_header_bytes=64, max_url_bytes=10, max_body_bytes=100)
    with pytest.raises(RequestRejected) as count:
        request_head(fields((b"a", b"1"), (b"b", b"2"), (b"c", b"3")), limits)
    assert count.value.status == 431
    with pytest.raises(RequestRejected) as size:
        request_head(fields((b"a", b"x" * 100)), limits)
    assert size.value.status == 431
    with pytest.raises(RequestRejected) as url:
        request_head(fields(path=b"/" + b"x" * 20), limits)
    assert url.value.status == 414
    with pytest.raises(RequestRejected) as body:
        request_head(fields((b"content-length", b"101")), limits)
    assert body.value.status == 413
    with pytest.raises(RequestRejected) as twice:
        request_head(fields((b"authorization", b"a"), (b"authorization", b"b")), ServerLimits())
    assert twice.value.status == 400
    with pytest.raises(RequestRejected) as connect:
        request_head([(b":method", b"CONNECT"), (b":authority", b"a:443")], ServerLimits())
    assert connect.value.status == 501
    with pytest.raises(RequestRejected) as authority:
        request_head(fields(authority=b"bad host"), ServerLimits())
    assert authority.value.status == 400


def test_budgets_are_counted_per_window_and_per_kind() -> None:
    budget = FloodBudget(Http2Limits(max_resets=3, max_pings=1, budget_window=10.0))
    assert [budget.spend(RESETS, 0.0) for _ in range(3)] == [None, None, None]
    assert budget.spend(PINGS, 1.0) is None  # another kind: its own count
    assert budget.spend(RESETS, 2.0) == "more than 3 stream resets in 10s"
    assert budget.spend(RESETS, 10.5) is None  # a new window starts from zero
