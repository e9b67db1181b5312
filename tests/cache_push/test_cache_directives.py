"""Cache-Control parsed by directive (RFC 9111 §5.2), query normalisation for keys, and the store
policy's decisions, as tables of cases."""

from __future__ import annotations

import email.utils
from typing import Any

import pytest

from edgeway.gateway.filters.cache.directives import MAX_DELTA, parse_cache_control
from edgeway.gateway.filters.cache.keys import normalize_query
from edgeway.gateway.filters.cache.policy import StorePolicy
from edgeway.gateway.filters.cache.store import Entry

CASES: list[tuple[list[str], dict[str, Any]]] = [
    ([""], {}),
    (["max-age=60"], {"max_age": 60}),
    (["MAX-AGE=60"], {"max_age": 60}),
    (['max-age="60"'], {"max_age": 60}),  # the quoted form is accepted too
    (["max-age = 60"], {"max_age": 60}),
    (["public, s-maxage=10, max-age=600"], {"public": True, "s_maxage": 10, "max_age": 600}),
    (["no-store"], {"no_store": True}),
    (["No-Cache"], {"no_cache": True}),
    (['no-cache="Set-Cookie, X-A"'], {"no_cache_fields": ("set-cookie", "x-a")}),
    (["private"], {"private": True}),
    (['private="set-cookie"'], {"private_fields": ("set-cookie",)}),
    (['private="a, b", max-age=5'], {"private_fields": ("a", "b"), "max_age": 5}),  # comma in quotes
    (['ext="x, max-age=9", max-age=5'], {"max_age": 5, "extensions": (("ext", "x, max-age=9"),)}),
    (['ext="a \\"q\\" b"'], {"extensions": (("ext", 'a "q" b'),)}),
    (["max-age=5", "no-store"], {"max_age": 5, "no_store": True}),  # several header lines
    ([",, max-age=5 ,,"], {"max_age": 5}),
    (["max-age=5, max-age=5"], {"max_age": 5}),
    (["max-age=5, max-age=6"], {"max_age": 5, "invalid": True}),  # conflicting: stale
    (["max-age=-1"], {"invalid": True}),
    (["max-age=abc"], {"invalid": True}),
    (["max-age=1.5"], {"invalid": True}),
    (["max-age="], {"invalid": True}),
    (["max-age=5 junk, public"], {"invalid": True, "public": True}),
    (["max-age=99999999999"], {"max_age": MAX_DELTA}),
    (['private="never closed, max-age=5'], {"private": True}),  # broken: read restrictively
    (["must-revalidate, proxy-revalidate"], {"must_revalidate": True, "proxy_revalidate": True}),
    (["only-if-cached, min-fresh=5"], {"only_if_cached": True, "min_fresh": 5}),
    (["min-fresh=x"], {}),  # a request directive that is broken is ignored, not "stale"
    (
        ["immutable, stale-while-revalidate=30"],
        {"extensions": (("immutable", None), ("stale-while-revalidate", "30"))},
    ),
    (["=5, max-age=3"], {"max_age": 3}),
]


@pytest.mark.parametrize(("lines", "expected"), CASES)
def test_cache_control_directives(lines: list[str], expected: dict[str, Any]) -> None:
    parsed = parse_cache_control(lines)
    defaults = parse_cache_control([])
    for name in parsed.__dataclass_fields__:
        assert getattr(parsed, name) == expected.get(name, getattr(defaults, name)), name


def test_bytes_lines_are_read_as_latin_1() -> None:
    assert parse_cache_control([b"max-age=5", b'private="\xe9"']).private_fields == ("\xe9",)


@pytest.mark.parametrize(
    ("query", "ignore", "key"),
    [
        (b"", (), b""),
        (b"b=2&a=1", (), b"a=1&b=2"),
        (b"a=2&a=1", (), b"a=2&a=1"),  # repeated names keep their order
        (b"b=1&a=2&a=1", (), b"a=2&a=1&b=1"),
        (b"a=%7e&b=%41", (), b"a=~&b=A"),  # unreserved characters decoded
        (b"a=%2f", (), b"a=%2F"),  # reserved ones stay encoded, hex upper-cased
        (b"a=+", (), b"a=+"),  # '+' is not a space here
        (b"a=%20", (), b"a=%20"),
        (b"a=1&&b=2&", (), b"a=1&b=2"),
        (b"flag&flag=", (), b"flag&flag="),
        (b"utm_source=x&q=1", (b"utm_source",), b"q=1"),
        (b"%75tm_source=x&q=1", (b"utm_source",), b"q=1"),  # ignored after normalising
        (b"a=%zz", (), b"a=%zz"),
    ],
)
def test_query_normalisation(query: bytes, ignore: tuple[bytes, ...], key: bytes) -> None:
    assert normalize_query(query, frozenset(ignore)) == key


POLICY = StorePolicy("r", frozenset({200, 404}), ttl=30.0, max_ttl=None, vary=frozenset({b"accept-language"}))
NOW = 1_700_000_000.0
DATE = email.utils.formatdate(NOW, usegmt=True).encode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], 30.0),
        ([(b"cache-control", b"max-age=100")], 100.0),
        ([(b"cache-control", b"max-age=100, s-maxage=7")], 7.0),
        ([(b"date", DATE), (b"expires", email.utils.formatdate(NOW + 50, usegmt=True).encode())], 50.0),
        ([(b"cache-control", b"max-age=100"), (b"expires", b"0")], 100.0),  # max-age wins over Expires
        ([(b"cache-control", b"max-age=100"), (b"age", b"40")], 60.0),
        (
            [
                (b"cache-control", b"max-age=100"),
                (b"date", email.utils.formatdate(NOW - 30, usegmt=True).encode()),
            ],
            70.0,
        ),
        ([(b"cache-control", b"max-age=100"), (b"age", b"100")], "stale"),
        ([(b"expires", b"-1")], "stale"),
        ([(b"vary", b"Accept-Language")], 30.0),
        ([(b"vary", b"accept-language, cookie")], "vary"),
        ([(b"cache-control", b"no-store")], "no-store"),
        ([(b"cache-control", b"private")], "private"),
        ([(b"cache-control", b"no-cache")], "no-cache"),
        ([(b"cache-control", b"max-age=1, max-age=2")], "invalid-cache-control"),
        ([(b"set-cookie", b"a=b")], "set-cookie"),
        ([(b"X-Edgeway-Completed", b"FALSE")], "partial"),
        ([(b"x-edgeway-completed", b"true")], 30.0),
    ],
)
def test_store_policy(headers: list[tuple[bytes, bytes]], expected: float | str) -> None:
    decided = POLICY.decide(200, headers, b"body", NOW, unverified_authorization=False)
    if isinstance(expected, str):
        assert decided == expected
    else:
        assert isinstance(decided, Entry)
        assert decided.expires_at - NOW == pytest.approx(expected)


def test_store_policy_strips_per_request_and_dropped_fields() -> None:
    headers = [
        (b"content-type", b"text/plain"),
        (b"x-request-id", b"abc"),
        (b"traceparent", b"00-x"),
        (b"Age", b"3"),
        (b"cache-control", b'max-age=60, no-cache="x-debug"'),
        (b"x-debug", b"secret"),
    ]
    decided = POLICY.decide(200, headers, b"", NOW, unverified_authorization=False)
    assert isinstance(decided, Entry)
    assert [n for n, _ in decided.headers] == [b"content-type", b"cache-control"]
    assert decided.age(NOW) == 3


def test_status_and_unverified_authorization() -> None:
    assert POLICY.decide(500, [], b"", NOW, unverified_authorization=False) == "status"
    assert POLICY.decide(200, [], b"", NOW, unverified_authorization=True) == "authorization"
    for allowed in (b"public", b"s-maxage=5", b"must-revalidate"):
        decided = POLICY.decide(200, [(b"cache-control", allowed)], b"", NOW, unverified_authorization=True)
        assert isinstance(decided, Entry), allowed
