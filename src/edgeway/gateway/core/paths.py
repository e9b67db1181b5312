"""Request path normalisation, done once before routing.

Why: a route's rules (and, later, its auth) apply to the path the router sees. If the router saw
``/public/../admin`` while the upstream resolves it to ``/admin``, the request would bypass the
``/admin`` route's rules. So the gateway routes *and forwards* one canonical form:

- percent-escapes of unreserved characters are decoded (``%2e%2e`` is ``..``, ``%41`` is ``A``);
  other escapes are kept, hex upper-cased (``%3a`` → ``%3A``); raw non-ASCII bytes are escaped;
- ``%2F`` follows the configured policy: ``reject`` (PathError → 400), ``decode`` (a separator)
  or ``keep`` (an opaque character inside its segment);
- duplicate slashes collapse; ``.`` and ``..`` segments are resolved (RFC 3986
  remove_dot_segments), and ``..`` above the root is an error, not silently clamped;
- a ``.`` or ``..`` segment with ``;`` parameters (``..;/``) is an error: Tomcat, Jetty and
  Spring drop the parameters, then resolve the dots the router never saw;
- a raw backslash is an error: no URI character (RFC 3986), and IIS, Windows file servers and
  some frameworks read it as a separator (``/public/..\\admin`` is ``/admin`` to them);
- NUL and other control characters, raw or escaped, are errors; so is a path not starting
  with ``/`` (except the asterisk-form ``*``, which only OPTIONS may use: the engine checks);
- when routing is case-insensitive the result is lower-cased (escapes stay upper-case).
"""

from __future__ import annotations

import re
from typing import Final

from edgeway.gateway.core.errors import PathError

# Anything that makes a path non-canonical: an escape, a control or non-ASCII byte, a space, a
# backslash, a duplicate slash or a segment starting with a dot. One C-level search keeps the common case at
# ~0.2 µs; the slow path only runs when it finds something.
_NEEDS_WORK: Final = re.compile(rb"[\x00-\x20\x7f-\xff%\\]|//|/\.")
_ESCAPE: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_UPPER_ESCAPE: Final = re.compile(r"%[0-9a-f]{2}")
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SLASH: Final = 0x2F
# Placeholder for a kept %2F while segments are split; NUL cannot survive the checks above, so it
# cannot collide with anything a client sent.
_KEPT_SLASH: Final = "\x00"

ENCODED_SLASH_POLICIES = ("reject", "decode", "keep")


def split_target(raw: bytes) -> tuple[bytes, bytes]:
    """Split an origin-form request-target into path and query (without the ``?``)."""
    path, _, query = raw.partition(b"?")
    return path, query


def normalize_path(raw: bytes, encoded_slash: str = "reject", case_sensitive: bool = True) -> str:
    """The canonical form of a request path (no query); raise PathError when it is unsafe."""
    if _NEEDS_WORK.search(raw) is None and raw[:1] == b"/":
        text = raw.decode("ascii")
        return text if case_sensitive else text.lower()
    if raw == b"*":
        return "*"
    if raw[:1] != b"/":
        raise PathError("a request path must start with '/'", raw)
    return _normalize_slow(raw, encoded_slash, case_sensitive)


def _normalize_slow(raw: bytes, encoded_slash: str, case_sensitive: bool) -> str:
    if encoded_slash not in ENCODED_SLASH_POLICIES:
        raise ValueError(f"encoded_slash must be one of {ENCODED_SLASH_POLICIES}, not {encoded_slash!r}")
    for byte in raw:
        if byte < 0x20 or byte == 0x7F:
            raise PathError("control character in path", raw)
    if b"\\" in raw:
        raise PathError("backslash in path (a separator to some services; send %5C)", raw)
    if _BAD_ESCAPE.search(raw) is not None:
        raise PathError("'%' not followed by two hex digits in path", raw)

    def decode(found: re.Match[bytes]) -> bytes:
        value = int(found.group(1), 16)
        if value in _UNRESERVED:
            return bytes((value,))
        if value < 0x20 or value == 0x7F:
            raise PathError("encoded control character in path", raw)
        if value == _SLASH:
            if encoded_slash == "reject":
                raise PathError(
                    "encoded slash (%2F) in path is rejected by the paths.encoded_slash policy", raw
                )
            if encoded_slash == "decode":
                return b"/"
            return _KEPT_SLASH.encode()
        return b"%%%02X" % value

    decoded = _ESCAPE.sub(decode, raw) if b"%" in raw else raw
    # Raw bytes a client should have escaped (space, non-ASCII) get escaped, so the result is
    # ASCII and stable under a second normalisation. NUL here can only be the kept-%2F marker.
    text = "".join(chr(b) if 0x20 < b < 0x7F or b == 0 else f"%{b:02X}" for b in decoded)
    segments = text.split("/")[1:]
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "..":
            if not out:
                raise PathError("'..' climbs above the root of the path", raw)
            out.pop()
            if index == last:
                out.append("")  # "/a/b/.." is "/a/": the result names a directory
        elif segment == ".":
            if index == last:
                out.append("")
        elif segment == "" and index != last:
            continue  # a duplicate slash
        elif segment.partition(";")[0] in (".", ".."):
            raise PathError("'.' or '..' segment with ';' parameters in path", raw)
        else:
            out.append(segment)
    result = "/" + "/".join(out)
    if _KEPT_SLASH in result:
        result = result.replace(_KEPT_SLASH, "%2F")
    if not case_sensitive:
        result = result.lower()
        if "%" in result:
            result = _UPPER_ESCAPE.sub(lambda found: found.group(0).upper(), result)
    return result
