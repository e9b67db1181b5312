"""Route path patterns and rewrite templates: parsing and well-formedness.

A path pattern is one of three kinds:

- exact     ``/health``            matches that path only;
- template  ``/users/{id}``        ``{name}`` stands for exactly one non-empty segment;
- prefix    ``/catalog/**``        ``**`` (the last segment) stands for any rest, including none:
                                   ``/catalog``, ``/catalog/`` and ``/catalog/a/b`` all match.
                                   Segments before ``**`` may be parameters (``/t/{tenant}/**``).

Patterns are compared with *normalised* request paths (see ``edgeway.gateway.core.paths``), so a
pattern that a normalised path can never equal (``//``, dot segments, a percent-escape of an
unreserved character) is an error here rather than a route that silently never matches.

A rewrite template is the upstream path with ``{name}`` taken from the path's parameters and
``{**}`` from a prefix pattern's rest.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# RFC 3986 pchar minus percent (escapes are checked on their own).
_REQUEST_LINE_TEXT = re.compile(r"[!-~]*")
_LITERAL = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()+,;=:@]|%[0-9A-Fa-f]{2})+")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_REWRITE_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

TAIL = "**"


class PatternError(ValueError):
    """A path pattern or rewrite template is malformed; the message says how to write it."""


class PatternKind(enum.Enum):
    EXACT = "exact"
    TEMPLATE = "template"
    PREFIX = "prefix"


@dataclass(frozen=True, slots=True)
class PathPattern:
    """A parsed path pattern.

    ``segments`` holds the literal text of each segment before any ``**`` and None where a
    parameter stands; ``params`` pairs each parameter's segment index with its name.
    """

    text: str
    kind: PatternKind
    segments: tuple[str | None, ...]
    params: tuple[tuple[int, str], ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.params)

    @property
    def literal_count(self) -> int:
        return sum(1 for segment in self.segments if segment is not None)

    def literal_prefix(self) -> tuple[str, ...]:
        """The leading literal segments, up to the first parameter."""
        out: list[str] = []
        for segment in self.segments:
            if segment is None:
                break
            out.append(segment)
        return tuple(out)


def parse_path_pattern(text: str) -> PathPattern:
    """Parse and check a route path pattern; raise PatternError saying what is wrong."""
    if not text.startswith("/"):
        raise PatternError(f"path pattern {text!r} must start with '/'")
    parts = text[1:].split("/")
    kind = PatternKind.EXACT
    if parts[-1] == TAIL:
        kind = PatternKind.PREFIX
        parts = parts[:-1]
    segments: list[str | None] = []
    params: list[tuple[int, str]] = []
    seen: set[str] = set()
    for index, part in enumerate(parts):
        is_last = index == len(parts) - 1
        if part == TAIL:
            raise PatternError(f"path pattern {text!r}: '**' may only be the last segment")
        if part == "":
            if is_last and kind is PatternKind.EXACT and index > 0:
                segments.append("")  # a trailing slash is significant: "/a/" is not "/a"
                continue
            if index == 0 and len(parts) == 1 and kind is PatternKind.EXACT:
                segments.append("")  # the root "/"
                continue
            raise PatternError(
                f"path pattern {text!r} has an empty segment ('//'); request paths are normalised "
                "so it could never match"
            )
        if part in {".", ".."}:
            raise PatternError(
                f"path pattern {text!r} has a dot segment {part!r}; request paths are normalised "
                "so it could never match"
            )
        param = _PARAM.fullmatch(part)
        if param is not None:
            name = param.group(1)
            if name in seen:
                raise PatternError(f"path pattern {text!r} uses parameter {{{name}}} twice")
            seen.add(name)
            params.append((index, name))
            segments.append(None)
            continue
        if "{" in part or "}" in part:
            raise PatternError(
                f"path pattern {text!r}: segment {part!r} is not a parameter; a parameter is a "
                "whole segment '{name}' with a name made of letters, digits and '_'"
            )
        if "*" in part:
            raise PatternError(
                f"path pattern {text!r}: '*' is only allowed as the final '**' segment; use "
                "'{name}' for one segment"
            )
        if _LITERAL.fullmatch(part) is None:
            raise PatternError(
                f"path pattern {text!r}: segment {part!r} has characters a URL path cannot "
                "hold unescaped; percent-encode them"
            )
        segments.append(_normalise_escapes(text, part))
    if kind is PatternKind.EXACT and params:
        kind = PatternKind.TEMPLATE
    return PathPattern(text=text, kind=kind, segments=tuple(segments), params=tuple(params))


def _normalise_escapes(text: str, part: str) -> str:
    def upper(found: re.Match[str]) -> str:
        if int(found.group(1), 16) in _UNRESERVED:
            raise PatternError(
                f"path pattern {text!r}: write {found.group(0)!r} as the character "
                f"{chr(int(found.group(1), 16))!r}; request paths are normalised to it"
            )
        return found.group(0).upper()

    return _ESCAPE.sub(upper, part) if "%" in part else part


@dataclass(frozen=True, slots=True)
class RewriteTemplate:
    """A parsed rewrite: literal pieces alternating with placeholders (a name, or ``**``)."""

    text: str
    pieces: tuple[tuple[bool, str], ...]  # (is_placeholder, literal text or parameter name)

    @property
    def uses(self) -> frozenset[str]:
        return frozenset(value for is_placeholder, value in self.pieces if is_placeholder)

    def render(self, params: dict[str, str], tail: str) -> str:
        out: list[str] = []
        for is_placeholder, value in self.pieces:
            if not is_placeholder:
                out.append(value)
            elif value == TAIL:
                out.append(tail)
            else:
                out.append(params[value])
        return "".join(out)


def parse_rewrite(text: str, pattern: PathPattern) -> RewriteTemplate:
    """Parse a rewrite template against the route's path pattern, checking what it uses."""
    if not text.startswith("/"):
        raise PatternError(f"rewrite {text!r} must start with '/'")
    pieces: list[tuple[bool, str]] = []
    position = 0
    for found in _REWRITE_PLACEHOLDER.finditer(text):
        if found.start() > position:
            pieces.append((False, _rewrite_literal(text, text[position : found.start()])))
        name = found.group(1)
        if name == TAIL:
            if pattern.kind is not PatternKind.PREFIX:
                raise PatternError(
                    f"rewrite {text!r} uses '{{**}}' but path {pattern.text!r} is not a prefix "
                    "pattern ending in '/**'"
                )
        elif name not in pattern.param_names:
            defined = ", ".join(pattern.param_names) or "none"
            raise PatternError(
                f"rewrite {text!r} uses '{{{name}}}' which path {pattern.text!r} does not define "
                f"(defined: {defined})"
            )
        pieces.append((True, name))
        position = found.end()
    if position < len(text):
        pieces.append((False, _rewrite_literal(text, text[position:])))
    return RewriteTemplate(text=text, pieces=tuple(pieces))


def _rewrite_literal(text: str, literal: str) -> str:
    if "{" in literal or "}" in literal:
        raise PatternError(f"rewrite {text!r} has an unbalanced '{{' or '}}'")
    if _REQUEST_LINE_TEXT.fullmatch(literal) is None:
        # It goes into the upstream request line as is: a space or a control would end or
        # split it, a non-ASCII character is not allowed there.
        raise PatternError(
            f"rewrite {text!r} may hold visible ASCII only; percent-encode spaces, controls and "
            "non-ASCII characters"
        )
    return literal
