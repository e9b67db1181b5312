"""The ``.proto`` text of a protobuf message type, rebuilt from its descriptor, for AsyncAPI.

AsyncAPI describes a protobuf payload with ``schemaFormat:
application/vnd.google.protobuf;version=3`` and the schema *as .proto source* in ``payload``
(what AsyncAPI's protobuf schema parser reads; it follows no imports but Google's own types).
A generated ``_pb2`` module keeps the descriptor, not the source, so :func:`proto_text` writes
the message back as source: the message, and every message and enum type it uses from the
same package (nested ones inside their parent), one self-contained text. Types from
``google/protobuf/*`` are imported by name; a type from another package of yours is
written out too, so the text still stands alone.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["proto_text"]

# FieldDescriptor.type numbers -> the .proto keyword (messages and enums are named instead).
_SCALARS: Final = {
    1: "double",
    2: "float",
    3: "int64",
    4: "uint64",
    5: "int32",
    6: "fixed64",
    7: "fixed32",
    8: "bool",
    9: "string",
    12: "bytes",
    13: "uint32",
    15: "sfixed32",
    16: "sfixed64",
    17: "sint32",
    18: "sint64",
}
_MESSAGE: Final = 11
_ENUM: Final = 14


def proto_text(message: Any) -> str:
    """The ``.proto`` source of the message type ``message`` (a generated message class or its
    descriptor) and of the types it uses."""
    root = getattr(message, "DESCRIPTOR", message)
    imports: set[str] = set()
    tops: list[Any] = []  # top-level messages and enums to write, in first-use order
    _collect(root, tops, imports, set())
    syntax = _syntax(root)
    lines = [f'syntax = "{syntax}";']
    package = root.file.package
    if package:
        lines.append(f"package {package};")
    lines += [f'import "{path}";' for path in sorted(imports)]
    for descriptor in tops:
        lines.append("")
        lines += _enum(descriptor, "") if _is_enum(descriptor) else _message(descriptor, "", syntax)
    return "\n".join(lines) + "\n"


def _syntax(descriptor: Any) -> str:
    """``proto2`` or ``proto3``, as the message's file says (an editions file is written as
    proto3, the closest AsyncAPI's parser reads)."""
    from google.protobuf import descriptor_pb2

    file = descriptor_pb2.FileDescriptorProto()
    descriptor.file.CopyToProto(file)
    return "proto2" if file.syntax in ("", "proto2") else "proto3"


def _is_enum(descriptor: Any) -> bool:
    return hasattr(descriptor, "values_by_name")


def _top(descriptor: Any) -> Any:
    while descriptor.containing_type is not None:
        descriptor = descriptor.containing_type
    return descriptor


def _collect(descriptor: Any, tops: list[Any], imports: set[str], seen: set[str]) -> None:
    """Every top-level type ``descriptor`` needs written, ``descriptor``'s own first."""
    if descriptor.full_name in seen:
        return
    seen.add(descriptor.full_name)
    if descriptor.file.name.startswith("google/protobuf/"):
        imports.add(descriptor.file.name)
        return
    top = _top(descriptor)
    if top is not descriptor:
        _collect(top, tops, imports, seen)
        return
    tops.append(top)
    if not _is_enum(top):
        for nested in _walk(top):
            for field in nested.fields:
                if field.type == _MESSAGE:
                    _collect(field.message_type, tops, imports, seen)
                elif field.type == _ENUM:
                    _collect(field.enum_type, tops, imports, seen)


def _walk(message: Any) -> list[Any]:
    out = [message]
    for nested in message.nested_types:
        out += _walk(nested)
    return out


def _enum(descriptor: Any, indent: str) -> list[str]:
    lines = [f"{indent}enum {descriptor.name} {{"]
    lines += [f"{indent}  {value.name} = {value.number};" for value in descriptor.values]
    lines.append(f"{indent}}}")
    return lines


def _type_name(field: Any) -> str:
    if field.type == _MESSAGE:
        return f".{field.message_type.full_name}"
    if field.type == _ENUM:
        return f".{field.enum_type.full_name}"
    return _SCALARS[field.type]


def _field(field: Any, syntax: str) -> str:
    if field.type == _MESSAGE and field.message_type.GetOptions().map_entry:
        key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return f"map<{_type_name(key)}, {_type_name(value)}> {field.name} = {field.number};"
    oneof = field.containing_oneof
    in_oneof = oneof is not None and not _synthetic(oneof)
    label = ""
    if field.is_repeated:
        label = "repeated "
    elif syntax == "proto2" and not in_oneof:
        label = "required " if field.is_required else "optional "
    elif oneof is not None and not in_oneof:
        label = "optional "  # proto3's explicit presence
    return f"{label}{_type_name(field)} {field.name} = {field.number};"


def _synthetic(oneof: Any) -> bool:
    """The oneof protoc makes for a proto3 ``optional`` field (one field, named ``_<field>``)."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def _message(descriptor: Any, indent: str, syntax: str) -> list[str]:
    lines = [f"{indent}message {descriptor.name} {{"]
    inner = indent + "  "
    for enum in descriptor.enum_types:
        lines += _enum(enum, inner)
    for nested in descriptor.nested_types:
        if not nested.GetOptions().map_entry:
            lines += _message(nested, inner, syntax)
    written: set[str] = set()
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and not _synthetic(oneof):
            if oneof.name in written:
                continue
            written.add(oneof.name)
            lines.append(f"{inner}oneof {oneof.name} {{")
            lines += [f"{inner}  {_field(member, syntax)}" for member in oneof.fields]
            lines.append(f"{inner}}}")
        else:
            lines.append(f"{inner}{_field(field, syntax)}")
    lines.append(f"{indent}}}")
    return lines
