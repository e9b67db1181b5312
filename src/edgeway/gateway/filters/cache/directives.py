"""``Cache-Control`` parsed by directive (RFC 9111 §5.2).

The field is a comma-separated list of ``token [ "=" ( token / quoted-string ) ]``; directive
names are case-insensitive, a quoted argument may contain commas (``private="set-cookie, x-a"``)
and escaped quotes, and several header lines form one list. Recipients accept both the token and
the quoted form of every argument (§5.2). What cannot be parsed is skipped up to the next comma,
so one bad directive does not hide the others; a malformed restrictive directive (``private``,
``no-store``...) still counts, unqualified.

A freshness directive (``max-age``, ``s-maxage``) whose value is not a non-negative integer, or
that appears twice with different values, makes the response *invalid* for storing: §4.2.1 lets
a cache treat such a response as stale, which is the only safe reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# §1.2.2: delta-seconds too large to represent are capped at 2^31.
MAX_DELTA = 2**31
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WS = " \t"


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one message. Unknown directives are kept in ``extensions``."""

    no_store: bool = False
    no_cache: bool = False  # unqualified: never reuse without revalidation
    no_cache_fields: tuple[str, ...] = ()  # qualified: reuse without these fields
    private: bool = False  # unqualified: a shared cache must not store
    private_fields: tuple[str, ...] = ()  # qualified: a shared cache stores without these fields
    public: bool = False
    max_age: int | None = None
    s_maxage: int | None = None
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    # request directives
    min_fresh: int | None = None
    only_if_cached: bool = False
    invalid: bool = False  # a malformed or conflicting freshness directive
    extensions: tuple[tuple[str, str | None], ...] = ()


def split_directives(value: str) -> list[tuple[str, str | None, bool]]:
    """``'Max-Age=5, private="a, b"'`` → ``[("max-age", "5", True), ("private", "a, b", True)]``;
    the flag is False for a directive whose name was read but whose rest is malformed."""
    out: list[tuple[str, str | None, bool]] = []
    i, n = 0, len(value)
    while i < n:
        while i < n and (value[i] in _WS or value[i] == ","):
            i += 1
        start = i
        while i < n and value[i] in _TCHAR:
            i += 1
        name = value[start:i].lower()
        while i < n and value[i] in _WS:
            i += 1
        arg: str | None = None
        ok = bool(name)
        if ok and i < n and value[i] == "=":
            i += 1
            while i < n and value[i] in _WS:
                i += 1
            if i < n and value[i] == '"':
                i, arg = _quoted(value, i)
                ok = arg is not None
            else:
                start = i
                while i < n and value[i] in _TCHAR:
                    i += 1
                arg = value[start:i]
        while i < n and value[i] in _WS:
            i += 1
        if i < n and value[i] != ",":
            ok = False
            # skip the rest of this malformed directive, honouring quotes
            while i < n and value[i] != ",":
                if value[i] == '"':
                    i, _ = _quoted(value, i)
                else:
                    i += 1
        if name:
            out.append((name, arg if ok else None, ok))
    return out


def _quoted(value: str, i: int) -> tuple[int, str | None]:
    """Parse a quoted-string starting at ``value[i] == '"'``; None when it is not closed."""
    i += 1
    chars: list[str] = []
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and i + 1 < n:
            chars.append(value[i + 1])
            i += 2
        elif ch == '"':
            return i + 1, "".join(chars)
        else:
            chars.append(ch)
            i += 1
    return n, None


def _delta(arg: str | None) -> int | None:
    if arg is None or not arg.isascii() or not arg.isdigit():
        return None
    return min(int(arg), MAX_DELTA)


def _fields(arg: str | None) -> tuple[str, ...]:
    if not arg:
        return ()
    return tuple(name.strip().lower() for name in arg.split(",") if name.strip())


def parse_cache_control(values: Iterable[bytes | str]) -> CacheControl:
    """Every ``Cache-Control`` line of a message, in order, into one :class:`CacheControl`."""
    joined = ",".join(v.decode("latin-1") if isinstance(v, bytes) else v for v in values)
    if not joined:
        return _EMPTY
    flags: set[str] = set()
    no_cache_fields: list[str] = []
    private_fields: list[str] = []
    deltas: dict[str, int] = {}
    invalid = False
    extensions: list[tuple[str, str | None]] = []
    for name, arg, ok in split_directives(joined):
        if not ok:
            # Read a malformed directive the restrictive way: a broken `private="...` still
            # means private, a broken max-age makes the response unusable.
            if name in _DELTAS:
                invalid = invalid or name != "min-fresh"
            elif name in _RESTRICTIVE:
                flags.add(name)
            continue
        if name in _DELTAS:
            seconds = _delta(arg)
            if seconds is None or deltas.get(name, seconds) != seconds:
                invalid = invalid or name != "min-fresh"
                continue
            deltas[name] = seconds
        elif name == "no-cache" and arg:
            no_cache_fields.extend(_fields(arg))
        elif name == "private" and arg:
            private_fields.extend(_fields(arg))
        elif name in _FLAGS:
            flags.add(name)
        else:
            extensions.append((name, arg))
    return CacheControl(
        no_store="no-store" in flags,
        no_cache="no-cache" in flags,
        no_cache_fields=tuple(no_cache_fields),
        private="private" in flags,
        private_fields=tuple(private_fields),
        public="public" in flags,
        max_age=deltas.get("max-age"),
        s_maxage=deltas.get("s-maxage"),
        must_revalidate="must-revalidate" in flags,
        proxy_revalidate="proxy-revalidate" in flags,
        min_fresh=deltas.get("min-fresh"),
        only_if_cached="only-if-cached" in flags,
        invalid=invalid,
        extensions=tuple(extensions),
    )


_DELTAS = frozenset({"max-age", "s-maxage", "min-fresh"})
_RESTRICTIVE = frozenset({"no-store", "no-cache", "private", "must-revalidate", "proxy-revalidate"})
_FLAGS = frozenset(
    {"no-store", "no-cache", "private", "public", "must-revalidate", "proxy-revalidate", "only-if-cached"}
)
_EMPTY = CacheControl()
