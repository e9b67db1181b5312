from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeway.gateway.core.errors import PathError
from edgeway.gateway.core.paths import normalize_path, split_target


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/", "/"),
        (b"/catalog/items", "/catalog/items"),
        (b"/a//b///c", "/a/b/c"),
        (b"/a/b/", "/a/b/"),
        (b"/a/./b/.", "/a/b/"),
        (b"/a/b/..", "/a/"),
        (b"/public/../admin", "/admin"),
        (b"/public/%2e%2e/admin", "/admin"),
        (b"/public/.%2E/admin", "/admin"),
        (b"/%41%62c", "/Abc"),
        (b"/a%3ab%7e", "/a%3Ab~"),
        (b"/x y", "/x%20y"),
        (b"/caf\xc3\xa9", "/caf%C3%A9"),
        (b"/.well-known/acme", "/.well-known/acme"),
        (b"/a/...", "/a/..."),
        (b"/%25252e", "/%25252e"),
    ],
)
def test_normalize_path_produces_the_canonical_form(raw: bytes, expected: str) -> None:
    assert normalize_path(raw, "reject", True) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/..",
        b"/a/../..",
        b"/%2e%2e/etc/passwd",
        b"/a/\x00b",
        b"/a%00",
        b"/a%0d%0aX: y",
        b"/a\x7f",
        b"/a%zz",
        b"/a%4",
        b"/a/..;/b",
        b"/a/..;jsessionid=1/b",
        b"/a/.;/b",
        b"/a/%2e%2e;/b",
        b"/a\\b",
        b"/a/..\\b",
    ],
)
def test_normalize_path_rejects_unsafe_paths(raw: bytes) -> None:
    with pytest.raises(PathError) as caught:
        normalize_path(raw, "decode", True)
    assert caught.value.status == 400


def test_a_path_not_starting_with_a_slash_is_rejected_but_asterisk_form_passes() -> None:
    with pytest.raises(PathError):
        normalize_path(b"a/b", "reject", True)
    with pytest.raises(PathError):
        normalize_path(b"", "reject", True)
    assert normalize_path(b"*", "reject", True) == "*"


def test_encoded_slash_follows_the_policy() -> None:
    with pytest.raises(PathError, match="encoded slash"):
        normalize_path(b"/a%2Fb", "reject", True)
    assert normalize_path(b"/a%2fb/../c", "decode", True) == "/a/c"
    assert normalize_path(b"/a%2fb/../c", "keep", True) == "/c"
    assert normalize_path(b"/a%2fb/c", "keep", True) == "/a%2Fb/c"


def test_case_insensitive_lowercases_but_keeps_escapes_upper() -> None:
    assert normalize_path(b"/Catalog/Items", "reject", False) == "/catalog/items"
    assert normalize_path(b"/A%3aB/%2f", "keep", False) == "/a%3Ab/%2F"


def test_an_unknown_encoded_slash_policy_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="encoded_slash"):
        normalize_path(b"/a%2F", "maybe", True)


def test_split_target_separates_path_and_query() -> None:
    assert split_target(b"/a/b?x=1&y=?") == (b"/a/b", b"x=1&y=?")
    assert split_target(b"/a") == (b"/a", b"")
    assert split_target(b"/a?") == (b"/a", b"")


_PATH_BYTES = st.lists(
    st.sampled_from(
        [b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%2f", b"%41", b"%3a", b"a", b"B", b"~", b"\xc3", b" "]
    ),
    max_size=20,
).map(lambda parts: b"/" + b"".join(parts))


@given(raw=_PATH_BYTES, policy=st.sampled_from(["decode", "keep"]), case_sensitive=st.booleans())
def test_normalised_paths_have_no_dot_segments_or_double_slashes_and_are_stable(
    raw: bytes, policy: str, case_sensitive: bool
) -> None:
    try:
        once = normalize_path(raw, policy, case_sensitive)
    except PathError:
        return
    assert once.startswith("/")
    for bad in ("/../", "/./", "//"):
        assert bad not in once
    assert not once.endswith(("/..", "/."))
    assert normalize_path(once.encode("ascii"), policy, case_sensitive) == once


@given(raw=st.binary(max_size=64))
def test_arbitrary_bytes_either_normalise_to_ascii_or_raise_path_error(raw: bytes) -> None:
    try:
        result = normalize_path(raw, "decode", True)
    except PathError:
        return
    assert result == "*" or (result.startswith("/") and result.isascii())
