"""``google.api.http`` rules: path templates and what each part of a request binds to.

The template grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A template compiles to one regular expression over the request's (still percent-encoded) path:
``*`` is one segment, ``**`` any number of them (last only); ``{id}`` is ``{id=*}``. A variable's
value is percent-decoded; one that spans several segments keeps its ``/`` (an encoded ``%2F``
inside a segment is decoded too: the field gets the text the client meant).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

__all__ = ["Binding", "PathTemplate", "TemplateError", "parse_template"]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;=@%]+")


class TemplateError(ValueError):
    """A path template does not follow the google.api.http grammar."""


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A compiled template: ``match`` a path for its variables (field path → text)."""

    text: str
    regex: re.Pattern[str]
    variables: tuple[tuple[str, ...], ...]  # field paths, in group order
    literal_segments: int  # for ordering: more literal segments, more specific

    def match(self, path: str) -> dict[tuple[str, ...], str] | None:
        found = self.regex.fullmatch(path)
        if found is None:
            return None
        return {field: unquote(value) for field, value in zip(self.variables, found.groups(), strict=True)}


def _split(text: str) -> list[str]:
    """Split on ``/`` outside braces."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise TemplateError("'}' without '{'")
        if ch == "/" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise TemplateError("'{' without '}'")
    parts.append(current)
    return parts


def _segments(parts: list[str], *, nested: bool) -> tuple[str, int, bool]:
    """Regex for literal/wildcard segments; (regex, literal count, ends with **)."""
    out: list[str] = []
    literals = 0
    for index, part in enumerate(parts):
        if part == "*":
            out.append("[^/]+")
        elif part == "**":
            if index != len(parts) - 1:
                raise TemplateError("'**' may only be the last segment")
            out.append(".*" if nested else "(?:.*)")
        elif part.startswith("{"):
            raise TemplateError("a variable may not hold another variable")
        elif _LITERAL.fullmatch(part):
            out.append(re.escape(part))
            literals += 1
        else:
            raise TemplateError(f"segment {part!r} is not a literal, '*', '**' or a variable")
    return "/".join(out), literals, bool(parts) and parts[-1] == "**"


def parse_template(text: str) -> PathTemplate:
    """Compile ``text``; :class:`TemplateError` says what is wrong."""
    if not text.startswith("/"):
        raise TemplateError(f"path template {text!r} must start with '/'")
    body = text[1:]
    verb = ""
    # The verb is the ':' part after the last segment, outside any variable.
    last_close = body.rfind("}")
    colon = body.rfind(":")
    if colon > last_close and colon > body.rfind("/"):
        body, verb = body[:colon], body[colon + 1 :]
        if not _LITERAL.fullmatch(verb):
            raise TemplateError(f"verb {verb!r} is not a literal")
    pieces: list[str] = []
    variables: list[tuple[str, ...]] = []
    literals = 0
    for part in _split(body) if body else [""]:
        if part.startswith("{"):
            if not part.endswith("}"):
                raise TemplateError(f"segment {part!r}: a variable is a whole segment, '{{field}}'")
            inner = part[1:-1]
            name, eq, pattern = inner.partition("=")
            path = tuple(name.split("."))
            if not all(_IDENT.fullmatch(step) for step in path):
                raise TemplateError(f"variable {name!r} is not a field path like 'name' or 'book.id'")
            if path in variables:
                raise TemplateError(f"variable {name!r} appears twice")
            regex, count, _ = _segments(pattern.split("/") if eq else ["*"], nested=True)
            literals += count
            variables.append(path)
            pieces.append(f"({regex})")
        elif part == "" and not pieces and not body:
            pieces.append("")
        else:
            regex, count, _ = _segments([part], nested=False)
            literals += count
            pieces.append(regex)
    pattern = "/" + "/".join(pieces) + (re.escape(":" + verb) if verb else "")
    return PathTemplate(text, re.compile(pattern), tuple(variables), literals)


@dataclass(frozen=True, slots=True)
class Binding:
    """One way a method is reached over HTTP: its verb and template, where the body goes
    (``*``: the whole message; a field name; None: no body), and which field of the response
    is the answer (None: the whole message)."""

    method: str  # GET, POST... (upper case)
    template: PathTemplate
    body: str | None
    response_body: str | None
