"""YAML files as trees of located nodes.

PyYAML's ``compose`` gives the node tree with marks; this module turns it into :class:`Node`
values that keep, for every value, the file, line and column it came from (and, for mapping
entries, where the key is), so a validation error deep in a merged, included document still points
at the line a user has to edit. String scalars are interpolated (``${VAR}``) on the way, and a
plain (unquoted) scalar is re-typed afterwards: ``port: ${PORT}`` becomes an int.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from edgeway.gateway.config.interpolation import interpolate, needs_interpolation
from edgeway.gateway.config.keypath import Loc, format_loc
from edgeway.gateway.core.errors import ConfigIssue


@dataclass(slots=True)
class Node:
    """A located YAML value: a scalar, a ``dict[str, Node]`` or a ``list[Node]``."""

    value: Any
    file: str
    line: int  # 1-based position of the value
    column: int
    loc: Loc = ()  # key path inside its own file (indices differ from the merged document's)
    key_line: int | None = None  # 1-based position of the key, for mapping entries
    key_column: int | None = None

    @property
    def is_mapping(self) -> bool:
        return isinstance(self.value, dict)

    @property
    def is_sequence(self) -> bool:
        return isinstance(self.value, list)

    def place(self) -> tuple[int, int]:
        """Where an error about this node should point: the key of an entry, else the value."""
        if self.key_line is not None and self.key_column is not None:
            return self.key_line, self.key_column
        return self.line, self.column

    def to_python(self) -> Any:
        if isinstance(self.value, dict):
            return {key: child.to_python() for key, child in self.value.items()}
        if isinstance(self.value, list):
            return [child.to_python() for child in self.value]
        return self.value


@dataclass
class _Builder:
    file: str
    env: Mapping[str, str]
    loader: yaml.SafeLoader
    issues: list[ConfigIssue] = field(default_factory=list)

    def issue(self, mark: yaml.Mark, loc: Loc, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, mark.line + 1, mark.column + 1, format_loc(loc), message))

    def build(self, node: yaml.Node, loc: Loc) -> Node:
        start = node.start_mark
        value: Any
        if isinstance(node, yaml.MappingNode):
            value = self.mapping(node, loc)
        elif isinstance(node, yaml.SequenceNode):
            value = [self.build(item, (*loc, index)) for index, item in enumerate(node.value)]
        else:
            assert isinstance(node, yaml.ScalarNode)  # the composer yields only these three kinds
            value = self.scalar(node, loc)
        return Node(value, self.file, start.line + 1, start.column + 1, loc)

    def mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Node]:
        seen: dict[str, yaml.Mark] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = str(key_node.value)
                if key in seen:
                    self.issue(
                        key_node.start_mark,
                        (*loc, key),
                        f"duplicate key '{key}' (first at line {seen[key].line + 1}); the last one would win",
                    )
                seen.setdefault(key, key_node.start_mark)
        self.loader.flatten_mapping(node)  # resolves "<<: *anchor" merge keys
        out: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(key_node.start_mark, loc, "a key must be a plain string, not a list or mapping")
                continue
            key = str(key_node.value)
            child = self.build(value_node, (*loc, key))
            child.key_line = key_node.start_mark.line + 1
            child.key_column = key_node.start_mark.column + 1
            out[key] = child
        return out

    def scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        value = self.loader.construct_object(node)
        if not isinstance(value, str) or not needs_interpolation(value):
            return value
        text, problems = interpolate(value, self.env)
        for problem in problems:
            self.issue(node.start_mark, loc, problem.message)
        if node.style is not None or problems:
            return text  # quoted: stays a string whatever it now contains
        # Plain scalar: type it as if the value had been written in the file.
        tag: str = self.loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        retyped = yaml.ScalarNode(tag, text, node.start_mark, node.end_mark)
        try:
            return self.loader.construct_object(retyped)
        except yaml.YAMLError:
            return text


def parse_yaml(text: str, file: str, env: Mapping[str, str]) -> tuple[Node | None, list[ConfigIssue]]:
    """Parse one YAML document into a located tree; syntax errors become issues with their line."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return None, [_syntax_issue(file, exc)]
        except yaml.YAMLError as exc:
            return None, [ConfigIssue(file, None, None, "", f"YAML error: {exc}")]
        if root is None:
            return Node({}, file, 1, 1), []
        builder = _Builder(file, env, loader)
        try:
            tree = builder.build(root, ())
        except yaml.MarkedYAMLError as exc:  # a bad scalar, e.g. an invalid timestamp
            return None, [*builder.issues, _syntax_issue(file, exc)]
        return tree, builder.issues
    finally:
        loader.dispose()


def _syntax_issue(file: str, exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    if exc.context:
        problem = f"{exc.context}, {problem}"
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    return ConfigIssue(file, line, column, "", f"YAML syntax error: {problem}")
