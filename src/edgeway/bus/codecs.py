"""How an event's payload is written and read: JSON (the default), msgpack or protobuf.

An event class chooses its encoding (``content_type``, or a ``protobuf`` message type, see
:class:`~edgeway.bus.events.Event`); the publisher encodes with it and names it in the
message's ``content-type`` header (left out for JSON, so a JSON event's wire form is what it
always was); a consumer decodes by that header, whatever its own class prefers. So one channel
can carry JSON and msgpack events of one type side by side (two producers, or during a
migration), and a consumer written without edgeway knows what it got.

- **JSON**: pydantic's own serializer and validator (``validate_json``).
- **msgpack**: the event's JSON form (``model_dump(mode="json")``) packed with msgpack, and
  validated from it: the same values and the same JSON schema, in fewer bytes. Needs the
  ``msgpack`` package (in the ``service`` extra).
- **protobuf**: the event's JSON form parsed into the class's protobuf message by protobuf's
  JSON mapping (``json_format``), and back (field names as in the ``.proto``). The message must
  have a field for every field of the event.

A payload that cannot be decoded (not msgpack, not that protobuf message, an unknown content
type, a protobuf payload for a class without a protobuf message) is an
:class:`~edgeway.bus.errors.EventDecodeError` naming why: the bus dead-letters it at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from pydantic import ValidationError

from edgeway.bus.errors import BusConfigError, EventDecodeError

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from edgeway.bus.events import Envelope, Event

E = TypeVar("E", bound="Event")

__all__ = [
    "JSON",
    "MSGPACK",
    "PROTOBUF",
    "SUPPORTED",
    "canonical",
    "decode_event",
    "encode_event",
    "payload_value",
]

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
PROTOBUF: Final = "application/protobuf"  # IANA's name; application/x-protobuf is its old alias
SUPPORTED: Final = (JSON, MSGPACK, PROTOBUF)

# Other spellings seen on the wire for the same encodings.
_ALIASES: Final = {
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
    "application/x-protobuf": PROTOBUF,
    "application/x-protobuffer": PROTOBUF,
    "application/vnd.google.protobuf": PROTOBUF,
}


def canonical(content_type: str) -> str:
    """``content_type`` without parameters, lower-case, an alias replaced by its name."""
    base = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


_msgpack_module: Any = None


def _msgpack() -> Any:
    """The msgpack module, imported once (a missing one named with its extra)."""
    global _msgpack_module
    if _msgpack_module is None:
        from edgeway.extras import require

        require("service", "msgpack event payloads")
        import msgpack

        _msgpack_module = msgpack
    return _msgpack_module


def check_class(event_class: type[Event]) -> None:
    """Refuse, when the class is defined, an encoding its events could not be published with."""
    name = event_class.__name__
    content_type = event_class.content_type
    if content_type not in SUPPORTED:
        raise BusConfigError(
            f"event class {name}: content_type {content_type!r} is not one the bus encodes "
            f"({', '.join(SUPPORTED)})"
        )
    if content_type == MSGPACK:
        _msgpack()
    message = event_class.protobuf
    if message is None:
        if content_type == PROTOBUF:
            raise BusConfigError(
                f"event class {name}: content_type {PROTOBUF} needs a protobuf message type "
                "(protobuf = YourMessage, from the module protoc generated)"
            )
        return
    descriptor = getattr(message, "DESCRIPTOR", None)
    if descriptor is None or not hasattr(descriptor, "fields_by_name"):
        raise BusConfigError(f"event class {name}: protobuf must be a generated protobuf message class")
    missing = [field for field in event_class.model_fields if field not in descriptor.fields_by_name]
    if missing:
        raise BusConfigError(
            f"event class {name}: protobuf message {descriptor.full_name} has no field "
            f"{', '.join(repr(f) for f in missing)}; every field of the event needs one"
        )


def encode_event(event: Event) -> bytes:
    """The payload of ``event`` in its class's encoding."""
    content_type = event.content_type
    if content_type == JSON:
        # The serializer's bytes as they are: model_dump_json() decodes them to str (0.2 µs more).
        return event.__pydantic_serializer__.to_json(event)
    value = event.__pydantic_serializer__.to_python(event, mode="json")
    if content_type == MSGPACK:
        packed: bytes = _msgpack().packb(value)
        return packed
    message_class = event.protobuf
    assert message_class is not None  # checked when the class was defined
    return _to_protobuf(value, message_class).SerializeToString()


def _to_protobuf(value: dict[str, Any], message_class: type[Message]) -> Message:
    from google.protobuf import json_format

    message = message_class()
    json_format.ParseDict(value, message)
    return message


def decode_event(event_class: type[E], envelope: Envelope) -> E:
    """The event in ``envelope``, read by its content type; :class:`EventDecodeError` when it
    cannot be."""
    content_type = canonical(envelope.content_type)
    try:
        if content_type == JSON:
            # The validator itself: model_validate_json only forwards to it (0.5 µs per event).
            return event_class.__pydantic_validator__.validate_json(envelope.payload)  # type: ignore[no-any-return]
        value = _value(event_class, envelope, content_type)
        return event_class.__pydantic_validator__.validate_python(value)  # type: ignore[no-any-return]
    except ValidationError as exc:
        raise EventDecodeError(envelope.type, envelope.id, str(exc)) from exc


def _value(event_class: type[Event], envelope: Envelope, content_type: str) -> Any:
    if content_type == MSGPACK:
        return _unpack(envelope)
    if content_type == PROTOBUF:
        message_class = event_class.protobuf
        if message_class is None:
            raise EventDecodeError(
                envelope.type,
                envelope.id,
                f"the payload is {PROTOBUF} but {event_class.__name__} declares no protobuf message type "
                "to read it with",
            )
        from google.protobuf import json_format
        from google.protobuf.message import DecodeError

        try:
            message = message_class.FromString(envelope.payload)
        except DecodeError as exc:
            raise EventDecodeError(
                envelope.type,
                envelope.id,
                f"the payload is not a valid {message_class.DESCRIPTOR.full_name} protobuf message: {exc}",
            ) from exc
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    raise EventDecodeError(
        envelope.type,
        envelope.id,
        f"unsupported content type {envelope.content_type!r} (the bus reads {', '.join(SUPPORTED)})",
    )


def _unpack(envelope: Envelope) -> Any:
    from edgeway.extras import MissingExtraError

    try:
        msgpack = _msgpack()
    except MissingExtraError as exc:
        # Dead-lettered like any payload this consumer cannot read: replayed once it can.
        raise EventDecodeError(envelope.type, envelope.id, str(exc)) from exc
    try:
        return msgpack.unpackb(envelope.payload)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise EventDecodeError(
            envelope.type, envelope.id, f"the payload is not valid msgpack ({MSGPACK}): {exc}"
        ) from exc


def payload_value(envelope: Envelope) -> Any:
    """The payload as plain values (dicts, lists, strings, numbers) without its event class:
    JSON and msgpack can be read so; a protobuf payload cannot (its field names are in the
    message type), which is an :class:`EventDecodeError`, as is a payload that does not parse."""
    content_type = canonical(envelope.content_type)
    if content_type == JSON:
        try:
            return orjson.loads(envelope.payload)
        except orjson.JSONDecodeError as exc:
            raise EventDecodeError(envelope.type, envelope.id, f"the payload is not JSON: {exc}") from exc
    if content_type == MSGPACK:
        return _unpack(envelope)
    raise EventDecodeError(
        envelope.type,
        envelope.id,
        f"a {envelope.content_type} payload cannot be read without its message type",
    )
