"""JSON in, a request message out; a response message out, JSON in the answer.

A request message is built from three sources, later ones winning a field both set: the JSON
body (the whole message with ``body: "*"``, one field with ``body: "<field>"``), the query
parameters (``?shelf.theme=x&tags=a&tags=b``: a dotted field path, repeated for a list), then
the path variables. Each source is parsed with :func:`google.protobuf.json_format.ParseDict`
(proto3 JSON mapping: proto or JSON field names, 64-bit integers and enums as strings,
well-known types) and merged into the message, so a value's type is checked by protobuf itself.
Anything wrong is a :class:`BadInput` naming the field; the call is not made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

__all__ = ["BadInput", "JsonOptions", "build_request", "render_response"]

_PARSE_STEP = re.compile(r"Failed to parse (\S+) field")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]+)"')
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class BadInput(Exception):
    """The client's request cannot become the method's input message; ``field`` names where."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class JsonOptions:
    """How messages print (Envoy's ``print_options``) and what the parser forgives."""

    preserve_proto_field_names: bool = False
    always_print_primitive_fields: bool = False
    always_print_enums_as_ints: bool = False
    int64_as_numbers: bool = False
    ignore_unknown_query_parameters: bool = False


def _field(descriptor: Descriptor, name: str) -> FieldDescriptor | None:
    found: FieldDescriptor | None = descriptor.fields_by_name.get(name)
    if found is None:
        found = next((f for f in descriptor.fields if f.json_name == name), None)
    return found


def _leaf(descriptor: Descriptor, path: tuple[str, ...]) -> FieldDescriptor | None:
    """The field a dotted path names, through message fields; None when there is none."""
    current = descriptor
    field: FieldDescriptor | None = None
    for index, step in enumerate(path):
        field = _field(current, step)
        if field is None:
            return None
        if index < len(path) - 1:
            if field.message_type is None or _is_repeated(field):
                return None
            current = field.message_type
    return field


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 5.x+ deprecates `label` for `is_repeated`; both are read to cover the range.
    flag = getattr(field, "is_repeated", None)
    if isinstance(flag, bool):
        return flag
    return bool(getattr(field, "label", None) == FieldDescriptor.LABEL_REPEATED)


def _scalar(field: FieldDescriptor, text: str, where: str) -> Any:
    """A path or query text as the JSON value its field takes (the parser checks the rest)."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadInput(f"{where}: {text!r} is not a boolean (true or false)", where)
    return text


def _place(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for step in path[:-1]:
        child = target.setdefault(step, {})
        if not isinstance(child, dict):
            raise BadInput(f"{'.'.join(path)}: '{step}' is set twice", ".".join(path))
        target = child
    target[path[-1]] = value


def _parse(source: Mapping[str, Any], message_type: type[Message], where: str) -> Message:
    message = message_type()
    try:
        json_format.ParseDict(dict(source), message)
    except json_format.ParseError as exc:
        raise BadInput(f"{where}: {exc}", _field_in(str(exc))) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise BadInput(f"{where}: {exc}") from None
    return message


def _field_in(text: str) -> str | None:
    """The dotted path of the field json_format complains about: it nests "Failed to parse
    <field> field: ..." once per level, and ends with "... has no field named "<name>"" for an
    unknown key."""
    steps = _PARSE_STEP.findall(text)
    unknown = _UNKNOWN_FIELD.search(text)
    if unknown is not None:
        steps.append(unknown.group(1))
    return ".".join(steps) or None


def build_request(
    message_type: type[Message],
    *,
    path_vars: Mapping[tuple[str, ...], str],
    query: Iterable[tuple[str, str]],
    body: Any,
    body_field: str | None,
    options: JsonOptions,
) -> Message:
    """The request message; :class:`BadInput` names the field that is wrong.

    ``body`` is the parsed JSON (None: no body); ``body_field``: ``*`` for the whole message, a
    field name, or None (a body is then refused).
    """
    descriptor = cast(Descriptor, message_type.DESCRIPTOR)
    message = message_type()
    if body is not None:
        if body_field is None:
            raise BadInput("this method takes no request body")
        if body_field == "*":
            if not isinstance(body, dict):
                raise BadInput("the request body must be a JSON object (the request message)")
            message.MergeFrom(_parse(body, message_type, "body"))
        else:
            message.MergeFrom(_parse({body_field: body}, message_type, "body"))
    from_query: dict[str, Any] = {}
    lists: dict[tuple[str, ...], list[Any]] = {}
    for key, text in query:
        path = tuple(key.split("."))
        field = _leaf(descriptor, path)
        if field is None:
            if options.ignore_unknown_query_parameters:
                continue
            raise BadInput(f"query parameter '{key}' is not a field of {descriptor.full_name}", key)
        if field.message_type is not None and not _scalar_json(field):
            raise BadInput(f"query parameter '{key}' names a message; name one of its fields", key)
        value = _scalar(field, text, key)
        if _is_repeated(field):
            lists.setdefault(path, []).append(value)
        else:
            _place(from_query, path, value)
    for path, values in lists.items():
        _place(from_query, path, values)
    if from_query:
        message.MergeFrom(_parse(from_query, message_type, "query"))
    if path_vars:
        from_path: dict[str, Any] = {}
        for path, text in path_vars.items():
            field = _leaf(descriptor, path)
            name = ".".join(path)
            if field is None:  # checked at load; a defensive message all the same
                raise BadInput(f"path variable '{name}' is not a field of {descriptor.full_name}", name)
            _place(from_path, path, _scalar(field, text, name))
        message.MergeFrom(_parse(from_path, message_type, "path"))
    return message


_TEXT_WKT = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.FieldMask",
        "google.protobuf.StringValue",
        "google.protobuf.BytesValue",
        "google.protobuf.Int32Value",
        "google.protobuf.Int64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.FloatValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.BoolValue",
    }
)


def _scalar_json(field: FieldDescriptor) -> bool:
    """Well-known types whose JSON form is one scalar: a query text can stand for them."""
    return field.message_type is not None and field.message_type.full_name in _TEXT_WKT


def check_field_path(descriptor: Descriptor, path: tuple[str, ...]) -> str | None:
    """Why ``path`` cannot take a path variable's text, or None when it can."""
    field = _leaf(descriptor, path)
    name = ".".join(path)
    if field is None:
        return f"'{name}' is not a field of {descriptor.full_name}"
    if _is_repeated(field):
        return f"'{name}' is a repeated field; a path variable sets one value"
    if field.message_type is not None and not _scalar_json(field):
        return f"'{name}' is a message; name one of its fields"
    return None


def render_response(message: Message, response_body: str | None, options: JsonOptions) -> Any:
    """The JSON value of the answer: the whole message, or its ``response_body`` field."""
    descriptor = cast(Descriptor, message.DESCRIPTOR)
    value = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=options.always_print_primitive_fields,
        preserving_proto_field_name=options.preserve_proto_field_names,
        use_integers_for_enums=options.always_print_enums_as_ints,
    )
    if options.int64_as_numbers:
        _int64_numbers(descriptor, value, options.preserve_proto_field_names)
    if response_body is None:
        return value
    field = descriptor.fields_by_name[response_body]
    key = field.name if options.preserve_proto_field_names else field.json_name
    if key in value:
        return value[key]
    # An unset field is still an answer: its JSON default, not a missing key.
    if _is_repeated(field):
        return {} if field.message_type is not None and field.message_type.GetOptions().map_entry else []
    if field.message_type is not None:
        return None
    full = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True, preserving_proto_field_name=True
    )
    if options.int64_as_numbers:
        _int64_numbers(descriptor, full, preserve_names=True)
    return full.get(field.name)


_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_INT64_WRAPPERS = frozenset({"google.protobuf.Int64Value", "google.protobuf.UInt64Value"})


def _int64_numbers(descriptor: Descriptor, value: dict[str, Any], preserve_names: bool) -> None:
    """Turn the 64-bit integers of a printed message (proto3 JSON's strings) into numbers, in
    place: through nested messages, lists and maps; the other well-known types keep their
    JSON forms."""
    for field in descriptor.fields:
        key = field.name if preserve_names else field.json_name
        found = value.get(key)
        if found is None:
            continue
        if _is_repeated(field) and isinstance(found, dict):  # a map: its values
            entry = cast(Descriptor, field.message_type).fields_by_name["value"]
            for name, item in found.items():
                found[name] = _int64_number(entry, item, preserve_names)
        elif _is_repeated(field) and isinstance(found, list):
            found[:] = [_int64_number(field, item, preserve_names) for item in found]
        else:
            value[key] = _int64_number(field, found, preserve_names)


def _int64_number(field: FieldDescriptor, item: Any, preserve_names: bool) -> Any:
    kind = field.message_type
    if field.cpp_type in _INT64 or (kind is not None and kind.full_name in _INT64_WRAPPERS):
        return int(item) if isinstance(item, str) else item
    if kind is not None and isinstance(item, dict) and not kind.full_name.startswith("google.protobuf."):
        _int64_numbers(kind, item, preserve_names)
    return item
