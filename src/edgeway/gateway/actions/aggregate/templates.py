"""Value templates and dotted paths of aggregate endpoints: parsing and well-formedness.

A *dotted path* walks into a JSON value: ``items[0].product_id``, ``data.user.name``; ``[*]``
stands for every element of a list (``items[*].product_id`` is the list of every item's id).
Keys are any characters except ``. [ ] { }`` and whitespace.

A *template* is a string with ``{reference}`` placeholders (``{{`` and ``}}`` are literal
braces). A reference names where its value comes from, then an optional dotted path into it:

    {path.id}                 a parameter of the route's path pattern
    {query.page}              the client's query parameter (first value)
    {header.accept-language}  the client's request header
    {body.customer.id}        the client's JSON body
    {identity.subject}        the authenticated caller (subject, client_id, roles, scopes, claims)
    {calls.order.items[*].product_id}   the response of another call (a dependency)
    {item} / {item.id}        the current element of a ``for_each`` fan-out
    {batch}                   the values of a ``batch`` call

Parsing happens once, at config load; the running gateway compiles the parsed forms into
closures (see :mod:`edgeway.gateway.actions.aggregate.plan`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final


class TemplateError(ValueError):
    """A template or dotted path is malformed; the message says how to write it."""


class Star:
    """``[*]``: every element of a list."""

    _instance: Star | None = None

    def __new__(cls) -> Star:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "[*]"


STAR: Final = Star()
Step = str | int | Star
Steps = tuple[Step, ...]

# Sources a reference may read, and whether a name follows the source.
SOURCES: Final = ("path", "query", "header", "body", "identity", "calls", "item", "batch")
_NAMED: Final = frozenset({"path", "query", "header", "calls"})
_KEY = re.compile(r"[^.\[\]{}\s]+")
_INDEX = re.compile(r"\[(\*|[0-9]+)\]")
_CALL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_steps(text: str, *, what: str = "path") -> Steps:
    """``a.b[0].c[*]`` → ``("a", "b", 0, "c", STAR)``; the empty string is the value itself."""
    steps: list[Step] = []
    position = 0
    expect_key = True
    while position < len(text):
        if text[position] == "[":
            found = _INDEX.match(text, position)
            if found is None:
                raise TemplateError(f"{what} {text!r}: an index is '[<number>]' or '[*]'")
            steps.append(STAR if found.group(1) == "*" else int(found.group(1)))
            position = found.end()
            expect_key = False
            continue
        if not expect_key:
            if text[position] != ".":
                raise TemplateError(f"{what} {text!r}: expected '.' or '[' at {text[position:]!r}")
            position += 1
        found_key = _KEY.match(text, position)
        if found_key is None:
            raise TemplateError(f"{what} {text!r}: empty or invalid key at position {position}")
        steps.append(found_key.group(0))
        position = found_key.end()
        expect_key = False
    return tuple(steps)


def format_steps(steps: Steps) -> str:
    out = ""
    for step in steps:
        if isinstance(step, Star):
            out += "[*]"
        elif isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


@dataclass(frozen=True, slots=True)
class Ref:
    """One ``{source.name.steps}`` reference."""

    source: str
    name: str | None  # the call, path parameter, query parameter or header it names
    steps: Steps  # the dotted path into that value
    text: str  # as written, without braces

    @property
    def fans_out(self) -> bool:
        """True when the path has ``[*]``: the value is a list of every match."""
        return any(isinstance(step, Star) for step in self.steps)

    @property
    def call(self) -> str | None:
        return self.name if self.source == "calls" else None


def parse_ref(text: str) -> Ref:
    source, dot, rest = text.partition(".")
    if source not in SOURCES:
        hint = ""
        if _KEY.fullmatch(text) is not None:
            hint = f" (a path parameter is written '{{path.{text}}}')"
        raise TemplateError(
            f"unknown reference '{{{text}}}': a reference starts with one of {', '.join(SOURCES)}{hint}"
        )
    name: str | None = None
    if source in _NAMED:
        if not dot or not rest:
            raise TemplateError(f"reference '{{{text}}}' needs a name: '{{{source}.<name>}}'")
        if source == "calls":
            found = _CALL_NAME.match(rest)
            if found is None:
                raise TemplateError(f"reference '{{{text}}}': '{rest}' does not start with a call name")
            name, rest = found.group(0), rest[found.end() :]
            if rest and rest[0] not in ".[":
                raise TemplateError(f"reference '{{{text}}}': expected '.' or '[' after the call name")
            rest = rest[1:] if rest.startswith(".") else rest
        else:
            # Parameter and header names may hold '-'; only a dot ends them.
            name, _, rest = rest.partition(".")
            if not name or _KEY.fullmatch(name) is None:
                raise TemplateError(f"reference '{{{text}}}': '{name}' is not a valid name")
            if source in {"path", "header", "query"} and rest:
                raise TemplateError(f"reference '{{{text}}}': a {source} value is a string, it has no fields")
    elif source == "batch" and dot:
        raise TemplateError(f"reference '{{{text}}}': write '{{batch}}' (the list of batched values)")
    elif dot and not rest:
        raise TemplateError(f"reference '{{{text}}}' ends with '.'")
    try:
        steps = parse_steps(rest, what=f"reference '{{{text}}}'") if rest else ()
    except TemplateError as exc:
        raise TemplateError(str(exc)) from None
    return Ref(source=source, name=name, steps=steps, text=text)


@dataclass(frozen=True, slots=True)
class Template:
    """Literal text alternating with references."""

    text: str
    parts: tuple[str | Ref, ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(part for part in self.parts if isinstance(part, Ref))

    @property
    def whole(self) -> Ref | None:
        """The reference when the template is exactly one (its value keeps its JSON type)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return self.parts[0]
        return None

    @property
    def is_literal(self) -> bool:
        return not self.refs


def parse_template(text: str) -> Template:
    """Parse ``"/orders/{path.id}?x={{y}}"`` into literal text and references."""
    parts: list[str | Ref] = []
    literal: list[str] = []
    position = 0
    while position < len(text):
        ch = text[position]
        if ch == "{":
            if text.startswith("{{", position):
                literal.append("{")
                position += 2
                continue
            end = text.find("}", position)
            if end == -1:
                raise TemplateError(f"template {text!r}: '{{' without a closing '}}' (write '{{{{' for '{{')")
            inner = text[position + 1 : end]
            if "{" in inner:
                raise TemplateError(f"template {text!r}: references do not nest")
            if literal:
                parts.append("".join(literal))
                literal = []
            parts.append(parse_ref(inner.strip()))
            position = end + 1
        elif ch == "}":
            if text.startswith("}}", position):
                literal.append("}")
                position += 2
                continue
            raise TemplateError(f"template {text!r}: '}}' without an opening '{{' (write '}}}}' for '}}')")
        else:
            literal.append(ch)
            position += 1
    if literal:
        parts.append("".join(literal))
    return Template(text=text, parts=tuple(parts))
