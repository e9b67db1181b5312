"""Small edits of a YAML file as text, placed by the positions PyYAML reports (``yaml.compose``):
the rest of the file — comments, order, quoting, blank lines — stays as it was, byte for byte.

ruamel.yaml, the YAML library that round-trips comments, is not among edgeway's dependencies
(nor of copier's); the two edits ``edgeway new`` makes need only where a top-level mapping or
sequence ends, which PyYAML's nodes carry, and the caller validates the result before writing it.
What these functions cannot place safely (a section written in flow style over several lines, a
file that is not a mapping) they refuse with :class:`YamlEditError` instead of guessing.
"""

from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = ["YamlEditError", "add_to_mapping", "add_to_sequence", "key_line", "top_level"]

_NULLS = ("", "~", "null", "Null", "NULL")


class YamlEditError(ValueError):
    """The text cannot be edited safely; the message says why."""


def top_level(text: str) -> MappingNode | None:
    """The document's top-level mapping (None for an empty document)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise YamlEditError(f"it is not valid YAML: {exc}") from None
    if root is None:
        return None
    if not isinstance(root, MappingNode):
        raise YamlEditError("its top level is not a mapping")
    return root


def _value_of(mapping: MappingNode, key: str) -> tuple[ScalarNode, Node] | None:
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def key_line(text: str, section: str, key: str) -> int | None:
    """The 1-based line of ``section.key`` (where a name is defined), if the file has it."""
    root = top_level(text)
    found = _value_of(root, section) if root is not None else None
    if found is None or not isinstance(found[1], MappingNode):
        return None
    entry = _value_of(found[1], key)
    return None if entry is None else entry[0].start_mark.line + 1


def _last_line(node: Node) -> int:
    """The 0-based index of the line after the node's last character (its comments excluded):
    a block collection ends where the next token starts, so follow its last child instead."""
    if isinstance(node, MappingNode) and not node.flow_style and node.value:
        return _last_line(node.value[-1][1] if not _empty(node.value[-1][1]) else node.value[-1][0])
    if isinstance(node, SequenceNode) and not node.flow_style and node.value:
        return _last_line(node.value[-1])
    mark = node.end_mark
    return mark.line + 1 if mark.column > 0 else mark.line


def _after_comments(lines: list[str], at: int, column: int) -> int:
    """Past the comment lines right below the last entry that are indented deeper than the
    entries (``#   resources: ...`` left inside it): they belong to it, not to what follows."""
    while at < len(lines):
        text = lines[at]
        stripped = text.lstrip(" ")
        if not stripped.startswith("#") or len(text) - len(stripped) <= column:
            break
        at += 1
    return at


def _empty(node: Node) -> bool:
    """A value left empty (``key:`` and nothing): it has no characters of its own to end at."""
    return isinstance(node, ScalarNode) and node.value == "" and node.start_mark.index == node.end_mark.index


def _newline(text: str) -> str:
    return "\r\n" if "\r\n" in text else "\n"


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += _newline(text)
    return lines


def add_to_mapping(text: str, section: str, block: list[str], *, indent: int = 2) -> str:
    """``text`` with ``block`` (lines of one entry, indented from column 0) added as the last entry
    of the top-level mapping ``section``: indented like the entries already there, after the last
    line of the last one, so a comment below it stays below. A missing section is appended at the
    end of the file; an empty one (``section: {}`` or ``section:``) becomes a block."""
    nl = _newline(text)
    root = top_level(text)
    lines = _lines(text)
    found = _value_of(root, section) if root is not None else None
    if found is None:
        if lines and lines[-1].strip():
            lines.append(nl)
        lines.append(f"{section}:{nl}")
        lines += [" " * indent + line + nl for line in block]
        return "".join(lines)
    key, value = found
    if isinstance(value, MappingNode) and value.value and not value.flow_style:
        first = value.value[0][0].start_mark.column
        at = _after_comments(lines, _last_line(value), first)
        return "".join([*lines[:at], *(" " * first + line + nl for line in block), *lines[at:]])
    is_null = isinstance(value, ScalarNode) and value.tag.endswith(":null") and value.value in _NULLS
    is_empty_flow = isinstance(value, MappingNode) and value.flow_style and not value.value
    if not (is_null or is_empty_flow):
        where = f"line {value.start_mark.line + 1}"
        raise YamlEditError(
            f"`{section}` ({where}) is not a block mapping edgeway new can add to; write its entries "
            "one per line (`name:` then its keys, indented)"
        )
    row = key.start_mark.line
    if value.end_mark.line != row:
        raise YamlEditError(f"`{section}` (line {row + 1}) is written over several lines")
    line = lines[row]
    if not _empty(value):
        # `section: {}` / `section: null` → `section:`, keeping a comment after it
        start, end = value.start_mark.column, value.end_mark.column
        line = (line[:start].rstrip() + line[end:]) if line[end:].strip() else line[:start].rstrip() + nl
    indent_at = key.start_mark.column + indent
    lines[row] = line
    return "".join([*lines[: row + 1], *(" " * indent_at + b + nl for b in block), *lines[row + 1 :]])


def add_to_sequence(text: str, key: str, item: str) -> str:
    """``text`` with the plain scalar ``item`` added at the end of the top-level sequence ``key``:
    inside the brackets of a one-line flow sequence (``include: [a.yaml]``), or as a ``- item``
    line after the last one of a block sequence. A missing key is added, as ``key: [item]``, before
    the first top-level key (after the comments that open the file)."""
    nl = _newline(text)
    root = top_level(text)
    lines = _lines(text)
    found = _value_of(root, key) if root is not None else None
    if found is None:
        at = root.value[0][0].start_mark.line if root is not None and root.value else len(lines)
        return "".join([*lines[:at], f"{key}: [{item}]{nl}", *lines[at:]])
    _, value = found
    if not isinstance(value, SequenceNode):
        raise YamlEditError(f"`{key}` (line {value.start_mark.line + 1}) is not a list")
    if value.flow_style:
        start, end = value.start_mark, value.end_mark
        if start.line != end.line:
            raise YamlEditError(f"`{key}` (line {start.line + 1}) is a list written over several lines")
        line = lines[end.line]
        close = end.column - 1
        if line[close] != "]":
            raise YamlEditError(f"`{key}` (line {start.line + 1}): cannot find the list's closing bracket")
        inside = line[start.column + 1 : close]
        added = f", {item}" if inside.strip() else item
        head = line[:close].rstrip() if inside.strip() else line[:close]
        lines[end.line] = head + added + line[close:]
        return "".join(lines)
    if not value.value:  # a block sequence has at least one item
        raise YamlEditError(f"`{key}` (line {value.start_mark.line + 1}) is an empty block list")
    first = value.value[0].start_mark
    column = lines[first.line][: first.column].rstrip().rfind("-")  # the dash before the first item
    if column < 0:
        raise YamlEditError(f"`{key}` (line {first.line + 1}): cannot find the list's first dash")
    at = _last_line(value)
    return "".join([*lines[:at], " " * column + f"- {item}{nl}", *lines[at:]])
