"""An AsyncAPI 2.6 document for a service's events: channels, messages, payload schemas, headers.

The event classes are the source of truth: each becomes a message named by its ``event_type``,
with its pydantic JSON schema as the payload and the bus's headers, and the ``contentType`` its
payload is written in (see :mod:`edgeway.bus.codecs`): ``application/json``; ``application/msgpack``
with the same JSON schema (msgpack carries the event's JSON values, so the schema describes them
as it does for JSON); ``application/protobuf`` with the schema as AsyncAPI takes a protobuf one,
``schemaFormat: application/vnd.google.protobuf;version=3`` and the ``.proto`` source of the
message in ``payload`` (AsyncAPI's protobuf schema parser reads it; :mod:`edgeway.bus.proto_text`
writes it from the generated class). AsyncAPI 2.6 requires tools to know JSON Schema, Avro,
OpenAPI and RAML only, so a protobuf message also keeps its JSON schema, under
``x-edgeway-json-payload``, for tools that know no protobuf; each channel lists its
messages, its :class:`~edgeway.bus.transport.ChannelConfig` (TTL, retries, …) and, when an
:class:`~edgeway.bus.bus.EventBus` is given, the consumer groups subscribed to it. A broker URL
adds a server and the broker's names (NATS subjects, or the RabbitMQ exchange as an AMQP channel
binding). ``edgeway bus asyncapi myservice.events`` prints it (YAML, or ``--json``).

In AsyncAPI 2.x terms every channel has a ``subscribe`` operation: the document tells other
services what they can subscribe to.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic.json_schema import models_json_schema

from edgeway.bus import codecs
from edgeway.bus.bus import EventBus
from edgeway.bus.errors import BusConfigError
from edgeway.bus.events import (
    H_CONTENT_TYPE,
    H_KEY,
    H_REQUEST_ID,
    H_TIME,
    H_TRACEPARENT,
    H_TRACESTATE,
    H_TYPE,
    Event,
)
from edgeway.bus.proto_text import proto_text
from edgeway.bus.transport import ChannelConfig

VERSION = "2.6.0"
PROTOBUF_SCHEMA_FORMAT = "application/vnd.google.protobuf;version=3"

_HEADERS: dict[str, Any] = {
    "type": "object",
    "description": "edgeway envelope metadata (the payload is the event, encoded as the message's "
    "contentType says).",
    "properties": {
        "ew-id": {
            "type": "string",
            "description": "Message id, a ULID; the de-duplication key. On NATS it travels as Nats-Msg-Id.",
        },
        H_TYPE: {"type": "string", "description": "The event type: which message this is."},
        H_TIME: {"type": "string", "description": "Publish time, Unix seconds (the TTL counts from it)."},
        H_KEY: {
            "type": "string",
            "description": "Ordering key; on NATS the last subject token when it is a valid token.",
        },
        H_REQUEST_ID: {"type": "string", "description": "Request id of the operation that published it."},
        H_TRACEPARENT: {"type": "string", "description": "W3C trace context of the publishing span."},
        H_TRACESTATE: {"type": "string", "description": "W3C tracestate of the trace, when it has one."},
        H_CONTENT_TYPE: {
            "type": "string",
            "enum": [codecs.MSGPACK, codecs.PROTOBUF],
            "description": "How the payload is encoded, when it is not JSON; consumers decode by it.",
        },
    },
}


def scan(module_names: Iterable[str]) -> tuple[list[type[Event]], dict[str, ChannelConfig]]:
    """The concrete event classes defined in the named modules (imported here), and the
    :class:`ChannelConfig` objects they hold at module level (shared channel settings)."""
    found: list[type[Event]] = []
    configs: dict[str, ChannelConfig] = {}
    for name in module_names:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise BusConfigError(f"cannot import {name!r} to look for event classes: {exc}") from exc
        for _, value in inspect.getmembers(module):
            if isinstance(value, ChannelConfig):
                configs.setdefault(value.name, value)
            elif (
                inspect.isclass(value)
                and issubclass(value, Event)
                and value.__module__ == module.__name__
                and "event_type" in value.__dict__
                and value not in found
            ):
                found.append(value)
    return found, configs


def document(
    events: Iterable[type[Event]],
    *,
    title: str,
    version: str = "1.0.0",
    description: str | None = None,
    bus: EventBus | None = None,
    channels: Mapping[str, ChannelConfig] | None = None,
    server: str | None = None,
    prefix: str = "ew",
) -> dict[str, Any]:
    """The AsyncAPI document (a dict ready for YAML or JSON). See the module docstring.

    Channel settings come from ``bus`` (what it was configured with), else ``channels``, else
    the defaults.
    """
    classes = list(dict.fromkeys(events))
    groups: dict[str, list[str]] = {}
    if bus is not None:
        for (name, group), subscribed in sorted(bus.subscriptions.items()):
            groups.setdefault(name, []).append(group)
            classes.extend(c for c in subscribed if c not in classes)
    if not classes:
        raise BusConfigError("no event classes to describe: name a module that defines some, or a bus")
    by_type: dict[str, type[Event]] = {}
    for cls in classes:
        other = by_type.setdefault(cls.event_type, cls)
        if other is not cls:
            raise BusConfigError(
                f"event type {cls.event_type!r} is declared twice: "
                f"{other.__qualname__} and {cls.__qualname__}"
            )
    refs, defs = models_json_schema(
        [(c, "validation") for c in classes], ref_template="#/components/schemas/{model}"
    )
    messages: dict[str, Any] = {}
    described: dict[str, Any] = {}
    protocol = _protocol(server)
    for cls in sorted(classes, key=lambda c: (c.channel, c.event_type)):
        message: dict[str, Any] = {
            "name": cls.event_type,
            "title": cls.__name__,
            "contentType": cls.content_type,
            "headers": {"$ref": "#/components/schemas/EdgewayHeaders"},
            "payload": refs[(cls, "validation")],
        }
        if cls.content_type == codecs.PROTOBUF and cls.protobuf is not None:
            message["schemaFormat"] = PROTOBUF_SCHEMA_FORMAT
            message["x-edgeway-json-payload"] = message["payload"]
            message["payload"] = proto_text(cls.protobuf)
            message["x-edgeway-protobuf-message"] = cls.protobuf.DESCRIPTOR.full_name
        if cls.__doc__ and cls.__doc__ is not Event.__doc__:
            message["summary"] = inspect.cleandoc(cls.__doc__).split("\n\n")[0]
        if cls.key_field is not None:
            message["x-edgeway-key-field"] = cls.key_field
        messages[cls.event_type] = message
        if bus is not None:
            config = bus.channel(cls.channel)
        else:
            config = (channels or {}).get(cls.channel) or ChannelConfig(cls.channel)
        entry = described.get(cls.channel)
        if entry is None:
            entry = described[cls.channel] = _channel(config, protocol, prefix, groups.get(cls.channel))
        entry["subscribe"]["message"]["oneOf"].append({"$ref": f"#/components/messages/{cls.event_type}"})
    out: dict[str, Any] = {
        "asyncapi": VERSION,
        "info": {"title": title, "version": version},
        "defaultContentType": "application/json",
    }
    if description:
        out["info"]["description"] = description
    if server is not None:
        out["servers"] = {"default": {"url": server, "protocol": protocol}}
    out["channels"] = described
    out["components"] = {
        "messages": messages,
        "schemas": {"EdgewayHeaders": _HEADERS, **defs.get("$defs", {})},
    }
    return out


def _protocol(server: str | None) -> str:
    if server is None or server.startswith(("nats://", "tls://")):
        return "nats"
    if server.startswith(("amqp://", "amqps://")):
        return "amqp"
    raise BusConfigError(f"unsupported broker URL {server!r}: use nats://… or amqp://…")


def _channel(config: ChannelConfig, protocol: str, prefix: str, groups: list[str] | None) -> dict[str, Any]:
    name = config.name
    where = (
        f"RabbitMQ topic exchange `{prefix}.{name}`, routing key `e.<key>`"
        if protocol == "amqp"
        else f"JetStream stream `{prefix.upper()}_{name}`, subjects `{prefix}.{name}.e.<key>`"
    )
    channel: dict[str, Any] = {
        "description": f"edgeway channel `{name}`: {where}.",
        "subscribe": {
            "operationId": f"receive_{name}".replace("-", "_"),
            "summary": f"Events published on `{name}`; every consumer group gets every event.",
            "message": {"oneOf": []},
        },
        "x-edgeway-channel": _settings(config),
    }
    if groups:
        channel["subscribe"]["x-edgeway-groups"] = groups
    if protocol == "amqp":
        channel["bindings"] = {
            "amqp": {
                "is": "routingKey",
                "exchange": {
                    "name": f"{prefix}.{name}",
                    "type": "topic",
                    "durable": True,
                    "autoDelete": False,
                },
                "bindingVersion": "0.2.0",
            }
        }
    else:
        channel["x-edgeway-nats-subject"] = f"{prefix}.{name}.e.*"
    return channel


def _settings(config: ChannelConfig) -> Mapping[str, Any]:
    return {
        "ttl": config.ttl,
        "on_expiry": config.on_expiry.value,
        "max_deliver": config.max_deliver,
        "backoff": {
            "initial": config.backoff.initial,
            "factor": config.backoff.factor,
            "maximum": config.backoff.maximum,
        },
        "ack_wait": config.ack_wait,
        "duplicate_window": config.duplicate_window,
        "replicas": config.replicas,
        "retention": config.retention,
    }
