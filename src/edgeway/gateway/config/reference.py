"""Render ``docs/config-reference.md`` from the schema: one table per model (key, type, default,
description). ``scripts/gen_config_reference.py`` writes it; a test checks the committed file is
current, so the reference cannot drift from the code."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from edgeway.gateway.config.json_schema import gateway_json_schema
from edgeway.gateway.config.schema import GatewayConfig

_HEADER = """\
# Gateway config reference

Generated from the schema by `scripts/gen_config_reference.py`; do not edit by hand.
How the file is loaded (interpolation, includes, errors) and how routes match is explained in
[configuration.md](configuration.md). `edgeway config schema` prints the same schema as JSON
Schema for editors.

Types: a **duration** is a number of seconds or a string with a unit (`250ms`, `2s`, `1m`, `1h`);
a **size** is a number of bytes or a string with a unit (`16KiB`, `10MiB`, `1GB`).
"""


def render_reference() -> str:
    schema = gateway_json_schema()
    defs: dict[str, Any] = schema.get("$defs", {})
    models = _models_by_name(GatewayConfig)
    out = [_HEADER]
    order = ["GatewayConfig", *_reachable(schema, defs)]
    for name in order:
        definition = schema if name == "GatewayConfig" else defs[name]
        model = models[name]
        title = "top level (`GatewayConfig`)" if name == "GatewayConfig" else f"`{name}`"
        out.append(f'\n<a id="{name.lower()}"></a>\n\n## {title}\n\n')
        if model.__doc__:
            out.append(" ".join(model.__doc__.split()) + "\n")
        out.append("\n| key | type | default | description |\n|---|---|---|---|\n")
        required = set(definition.get("required", []))
        for key, prop in definition.get("properties", {}).items():
            kind = _type(prop)
            default = "**required**" if key in required else _default(model, key)
            description = prop.get("description", "").replace("|", "\\|")
            out.append(f"| `{key}` | {kind} | {default} | {description} |\n")
    return "".join(out)


def _models_by_name(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    pending: list[type[BaseModel]] = [root]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            pending.extend(_model_args(field.annotation))
    return found


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()):
        out.extend(_model_args(arg))
    return out


def _reachable(node: Any, defs: dict[str, Any]) -> list[str]:
    """Model names in the order a reader meets them, depth first from the top level."""
    order: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                name = ref.rsplit("/", 1)[-1]
                if name not in order:
                    order.append(name)
                    walk(defs[name].get("properties", {}))
            for key, child in value.items():
                if key != "$defs":
                    walk(child)
        elif isinstance(value, list):
            for child in value:
                walk(child)

    walk(node.get("properties", {}))
    return order


def _type(prop: dict[str, Any]) -> str:
    unit = prop.get("x-edgeway-unit")
    if unit is not None:
        return str(unit)
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in prop:
        return " \\| ".join(_type(member) for member in prop["anyOf"])
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if "enum" in prop:
        return " \\| ".join(f"`{value}`" for value in prop["enum"])
    kind = prop.get("type")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of string → {_type(prop['additionalProperties'])}"
    if kind == "object":
        return "map of string → string" if "additionalProperties" in prop else "object"
    return str(kind) if kind else "any"


def _default(model: type[BaseModel], key: str) -> str:
    # The schema names a field by its alias (``validate``) where it has one.
    by_alias = {field.alias or name: field for name, field in model.model_fields.items()}
    value = by_alias[key].get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(its defaults)"
    return f"`{json.dumps(value)}`"
