"""Push topics: names like ``orders/42`` and the patterns routes authorise them by (``orders/{id}``).

A topic is one to eight ``/``-separated segments of letters, digits, ``_``, ``-``, ``.`` and
``:``. A pattern segment is either such a literal or a ``{name}`` parameter that matches exactly
one segment. Patterns are parsed once (config load); matching a topic is one regex call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_TOPIC_LENGTH = 256
_SEGMENT = r"[A-Za-z0-9_.:-]+"
TOPIC = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT}){{0,7}}")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LITERAL = re.compile(_SEGMENT)


class TopicPatternError(ValueError):
    """A topic pattern is malformed; the message says which segment and why."""


@dataclass(frozen=True, slots=True)
class TopicPattern:
    text: str
    params: tuple[str, ...]
    regex: re.Pattern[str]

    def match(self, topic: str) -> dict[str, str] | None:
        """The parameters when ``topic`` matches, else None."""
        found = self.regex.fullmatch(topic)
        return None if found is None else found.groupdict()


def valid_topic(topic: str) -> bool:
    return len(topic) <= MAX_TOPIC_LENGTH and TOPIC.fullmatch(topic) is not None


def parse_topic_pattern(text: str) -> TopicPattern:
    """``orders/{id}`` → a pattern with parameter ``id`` matching ``orders/42``."""
    segments = text.split("/")
    if not text or len(segments) > 8:
        raise TopicPatternError(f"topic pattern {text!r} needs 1 to 8 '/'-separated segments")
    parts: list[str] = []
    params: list[str] = []
    for segment in segments:
        param = _PARAM.fullmatch(segment)
        if param is not None:
            name = param.group(1)
            if name in params:
                raise TopicPatternError(f"topic pattern {text!r} uses {{{name}}} twice")
            params.append(name)
            parts.append(f"(?P<{name}>{_SEGMENT})")
        elif _LITERAL.fullmatch(segment) is not None:
            parts.append(re.escape(segment))
        else:
            raise TopicPatternError(
                f"topic pattern {text!r}: segment {segment!r} must be a literal of letters, digits, "
                "'_', '-', '.', ':' or a whole-segment parameter like {id}"
            )
    return TopicPattern(text, tuple(params), re.compile("/".join(parts)))


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """A topic built from a message's fields: ``jobs/{job_id}``, ``orders/{order.id}/status``."""

    text: str
    fields: tuple[tuple[str, ...], ...]  # dotted paths, split
    pieces: tuple[str, ...]  # literal text around the fields: len(fields) + 1 pieces

    def render(self, data: object) -> str | None:
        """The topic for ``data`` (a decoded JSON object), or None when a field is missing or its
        value cannot be a topic segment (the message then has no topic and is dropped)."""
        out = [self.pieces[0]]
        for path, piece in zip(self.fields, self.pieces[1:], strict=True):
            value = data
            for key in path:
                if not isinstance(value, dict) or key not in value:
                    return None
                value = value[key]
            if isinstance(value, bool) or not isinstance(value, str | int):
                return None
            text = str(value)
            if _LITERAL.fullmatch(text) is None:
                return None  # a value is one segment: it cannot steer the message to another topic
            out.append(text)
            out.append(piece)
        topic = "".join(out)
        return topic if valid_topic(topic) else None


def parse_topic_template(text: str) -> TopicTemplate:
    fields: list[tuple[str, ...]] = []
    pieces: list[str] = []
    last = 0
    for found in _PLACEHOLDER.finditer(text):
        pieces.append(text[last : found.start()])
        fields.append(tuple(found.group(1).split(".")))
        last = found.end()
    pieces.append(text[last:])
    # Check the literal shape by rendering every field as a plain segment character.
    probe = "x".join(pieces)
    if "{" in probe or "}" in probe or not valid_topic(probe):
        raise TopicPatternError(
            f"topic template {text!r} must read like a topic (segments of letters, digits, '_', "
            "'-', '.', ':' separated by '/') with {field} or {dotted.field} placeholders"
        )
    return TopicTemplate(text, tuple(fields), tuple(pieces))
