"""Events with a binary payload: msgpack and protobuf beside JSON, on real NATS and RabbitMQ.

The encoding travels in the message's ``content-type`` header and consumers decode by it; a JSON
event's wire form is unchanged (no header). What cannot be decoded is dead-lettered at once with
the reason. The outbox keeps the payload bytes as they are on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edgeway.bus import codecs
from edgeway.bus.asyncapi import PROTOBUF_SCHEMA_FORMAT, document
from edgeway.bus.bus import EventBus, Received
from edgeway.bus.dlq import DeadLetters
from edgeway.bus.errors import BusConfigError
from edgeway.bus.events import H_CONTENT_TYPE, Envelope, Event, envelope_for, new_event_id
from edgeway.bus.memory import MemoryTransport
from edgeway.bus.outbox import OutboxRelay
from edgeway.bus.proto_text import proto_text
from edgeway.bus.transport import Backoff, ChannelConfig

from .conftest import BrokerUnderTest
from .db import Database
from .helpers import eventually

FAST = Backoff(0.05, 2.0, 0.2)


def _shipment_message() -> Any:
    """A protobuf message class built from a descriptor, as protoc's output would hold it."""
    file = descriptor_pb2.FileDescriptorProto(name="edgeway_test/shipping.proto", package="edgewaytest")
    file.syntax = "proto3"
    kind = file.enum_type.add(name="Carrier")
    kind.value.add(name="CARRIER_UNKNOWN", number=0)
    kind.value.add(name="CARRIER_POST", number=1)
    message = file.message_type.add(name="OrderShipped")
    field = descriptor_pb2.FieldDescriptorProto
    message.field.add(name="order_id", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    message.field.add(name="weight_grams", number=2, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    message.field.add(name="items", number=3, type=field.TYPE_STRING, label=field.LABEL_REPEATED)
    message.field.add(
        name="carrier",
        number=4,
        type=field.TYPE_ENUM,
        type_name=".edgewaytest.Carrier",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgewaytest.OrderShipped"))


SHIPMENT = _shipment_message()


def binary_events(name: str) -> tuple[type[Event], type[Event], type[Event]]:
    """One event type on channel ``name`` as JSON and as msgpack (two producers), and a protobuf
    event on the same channel."""

    class OrderPlaced(Event):
        channel = name
        event_type = "order.placed.v1"
        key_field = "order_id"
        order_id: str
        total_cents: int
        lines: list[str] = []

    class OrderPlacedPacked(OrderPlaced):
        content_type = codecs.MSGPACK

    class OrderShipped(Event):
        channel = name
        event_type = "order.shipped.v1"
        protobuf = SHIPMENT
        order_id: str
        weight_grams: int
        items: list[str]
        carrier: str = "CARRIER_UNKNOWN"

    return OrderPlaced, OrderPlacedPacked, OrderShipped


def test_an_event_class_declares_its_encoding_and_a_wrong_one_is_refused() -> None:
    placed, packed, shipped = binary_events("declared")
    assert (placed.content_type, packed.content_type, shipped.content_type) == (
        codecs.JSON,
        codecs.MSGPACK,
        codecs.PROTOBUF,
    )

    class Aliased(Event):
        channel = "declared"
        event_type = "x.v1"
        content_type = "application/x-msgpack; charset=binary"
        n: int

    assert Aliased.content_type == codecs.MSGPACK
    with pytest.raises(BusConfigError, match="'text/csv' is not one the bus encodes"):

        class Csv(Event):
            channel = "declared"
            event_type = "csv.v1"
            content_type = "text/csv"

    with pytest.raises(BusConfigError, match="needs a protobuf message type"):

        class NoMessage(Event):
            channel = "declared"
            event_type = "p.v1"
            content_type = codecs.PROTOBUF

    with pytest.raises(BusConfigError, match=r"edgewaytest.OrderShipped has no field 'customer'"):

        class MoreFields(Event):
            channel = "declared"
            event_type = "shipped.v2"
            protobuf = SHIPMENT
            order_id: str
            customer: str


def test_the_payload_is_encoded_as_declared_and_named_in_a_header_only_when_not_json() -> None:
    placed, packed, shipped = binary_events("wire")
    as_json = envelope_for(placed(order_id="o1", total_cents=990), {H_CONTENT_TYPE: "text/plain"})
    as_msgpack = envelope_for(packed(order_id="o1", total_cents=990, lines=["a"]))
    as_protobuf = envelope_for(
        shipped(order_id="o1", weight_grams=1200, items=["a", "b"], carrier="CARRIER_POST")
    )
    assert H_CONTENT_TYPE not in as_json.headers  # JSON's wire form is what it always was
    assert orjson.loads(as_json.payload) == {"order_id": "o1", "total_cents": 990, "lines": []}
    assert as_msgpack.headers[H_CONTENT_TYPE] == codecs.MSGPACK
    assert msgpack.unpackb(as_msgpack.payload) == {"order_id": "o1", "total_cents": 990, "lines": ["a"]}
    assert as_protobuf.headers[H_CONTENT_TYPE] == codecs.PROTOBUF
    message = SHIPMENT.FromString(as_protobuf.payload)
    assert (message.order_id, message.weight_grams, list(message.items), message.carrier) == (
        "o1",
        1200,
        ["a", "b"],
        1,
    )
    assert len(as_msgpack.payload) < len(orjson.dumps({"order_id": "o1", "total_cents": 990, "lines": ["a"]}))


async def test_msgpack_and_json_events_of_one_type_share_a_channel_and_both_reach_the_consumer(
    broker: BrokerUnderTest, unique: Callable[[str], str]
) -> None:
    placed, packed, shipped = binary_events(unique("orders"))
    got: list[tuple[str, int, str]] = []
    shipments: list[Event] = []

    async def on_placed(event: Event, ctx: Received) -> None:
        got.append((event.order_id, event.total_cents, ctx.envelope.content_type))  # type: ignore[attr-defined]

    async def on_shipped(event: Event) -> None:
        shipments.append(event)

    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel, backoff=FAST)])
    # The consumer knows the JSON class only: the header tells it how each message is encoded.
    bus.add_handler(placed, on_placed, group="billing")
    bus.add_handler(shipped, on_shipped, group="billing")
    async with bus:
        await bus.publish(placed(order_id="o1", total_cents=100))
        await bus.publish(packed(order_id="o2", total_cents=200, lines=["sku-1"]))
        await bus.publish(placed(order_id="o3", total_cents=300))
        await bus.publish(
            shipped(order_id="o2", weight_grams=5_000_000_000, items=["sku-1"], carrier="CARRIER_POST")
        )
        await eventually(lambda: len(got) == 3 and len(shipments) == 1, what="four events")
    assert sorted(got) == [
        ("o1", 100, codecs.JSON),
        ("o2", 200, codecs.MSGPACK),
        ("o3", 300, codecs.JSON),
    ]
    (shipment,) = shipments
    assert shipment == shipped(
        order_id="o2", weight_grams=5_000_000_000, items=["sku-1"], carrier="CARRIER_POST"
    )


@pytest.mark.parametrize(
    ("content_type", "payload", "reason"),
    [
        (codecs.MSGPACK, b"\xc1 not msgpack", "the payload is not valid msgpack (application/msgpack)"),
        (codecs.MSGPACK, msgpack.packb({"order_id": 7}), "does not validate"),
        (codecs.PROTOBUF, b"\x0a\x02o1", "OrderPlaced declares no protobuf message type to read it with"),
        ("application/xml", b"<order/>", "unsupported content type 'application/xml'"),
    ],
)
async def test_a_payload_that_cannot_be_decoded_is_dead_lettered_at_once_with_why(
    broker: BrokerUnderTest, unique: Callable[[str], str], content_type: str, payload: bytes, reason: str
) -> None:
    placed, _, _ = binary_events(unique("orders"))
    config = ChannelConfig(placed.channel, max_deliver=5, backoff=FAST)
    handled: list[Event] = []

    async def handle(event: Event) -> None:
        handled.append(event)

    bus = EventBus(broker.make(), channels=[config])
    bus.add_handler(placed, handle, group="billing")
    dlq = DeadLetters(bus.transport, config)
    bad = Envelope(
        new_event_id(), placed.event_type, placed.channel, 0.0, payload, "o1", {H_CONTENT_TYPE: content_type}
    )
    async with bus:
        await bus.publish_envelope(bad)
        await bus.publish(placed(order_id="o2", total_cents=1))  # the channel goes on
        await eventually(lambda: len(handled) == 1, what="the good event")

        async def dead() -> bool:
            return len(await dlq.list()) == 1

        await eventually(dead, what="a dead letter")
        (letter,) = await dlq.list()
    assert reason in letter.reason
    assert letter.envelope.id == bad.id
    assert letter.envelope.payload == payload  # kept as it came, to be looked at or replayed
    assert letter.envelope.content_type == content_type
    assert [e.order_id for e in handled] == ["o2"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("broker", ["nats"], indirect=True)
async def test_the_outbox_stores_binary_payloads_as_bytes_and_the_relay_sends_them_as_they_were(
    broker: BrokerUnderTest, database: Database, unique: Callable[[str], str]
) -> None:
    placed, packed, shipped = binary_events(unique("orders"))
    got: list[tuple[str, str]] = []

    async def on_placed(event: Event, ctx: Received) -> None:
        got.append((event.order_id, ctx.envelope.content_type))  # type: ignore[attr-defined]

    async def on_shipped(event: Event, ctx: Received) -> None:
        got.append((f"shipped {event.order_id}", ctx.envelope.content_type))  # type: ignore[attr-defined]

    bus = EventBus(broker.make(), channels=[ChannelConfig(placed.channel)])
    bus.add_handler(placed, on_placed, group="billing")
    bus.add_handler(shipped, on_shipped, group="billing")
    relay = OutboxRelay(database.outbox, database.sessions, bus)
    async with database.sessions() as session, session.begin():
        # One operation, three encodings: each keeps its own content type.
        written = await database.outbox.add_many(
            session,
            [
                packed(order_id="o1", total_cents=1, lines=["\x00\xff binary-looking text"]),
                placed(order_id="o2", total_cents=2),
                shipped(order_id="o1", weight_grams=3, items=[]),
            ],
        )
    table = database.outbox.table
    async with database.sessions() as session:
        rows = (await session.execute(table.select().order_by(table.c.id))).all()
    assert [bytes(r.payload) for r in rows] == [e.payload for e in written]
    assert msgpack.unpackb(bytes(rows[0].payload))["lines"] == ["\x00\xff binary-looking text"]
    async with bus:
        assert await relay.relay_once() == 3
        await eventually(lambda: len(got) == 3, what="three events")
    assert sorted(got) == [
        ("o1", codecs.MSGPACK),
        ("o2", codecs.JSON),
        ("shipped o1", codecs.PROTOBUF),
    ]


async def test_a_replayed_binary_dead_letter_keeps_its_encoding() -> None:
    placed, packed, _ = binary_events("replayed")
    config = ChannelConfig(placed.channel, max_deliver=1, backoff=FAST)
    broken = True
    got: list[str] = []

    async def handle(event: Event) -> None:
        if broken:
            raise RuntimeError("down")
        got.append(event.order_id)  # type: ignore[attr-defined]

    bus = EventBus(MemoryTransport(), channels=[config])
    bus.add_handler(placed, handle, group="billing")
    dlq = DeadLetters(bus.transport, config)
    async with bus:
        await bus.publish(packed(order_id="o9", total_cents=9))

        async def dead() -> bool:
            return len(await dlq.list()) == 1

        await eventually(dead, what="a dead letter")
        broken = False
        (letter,) = await dlq.list()
        assert letter.envelope.content_type == codecs.MSGPACK
        await dlq.replay(letter.id)
        await eventually(lambda: got == ["o9"], what="the replayed event")
        await asyncio.sleep(0)


def test_asyncapi_names_each_messages_content_type_and_describes_protobuf_as_asyncapi_allows() -> None:
    placed, _, shipped = binary_events("docs")

    class StockLow(Event):
        channel = "docs"
        event_type = "stock.low.v1"
        content_type = codecs.MSGPACK
        sku: str

    doc = document([placed, shipped, StockLow], title="shop")
    messages = doc["components"]["messages"]
    assert doc["defaultContentType"] == codecs.JSON
    assert messages["order.placed.v1"]["contentType"] == codecs.JSON
    assert "schemaFormat" not in messages["order.placed.v1"]
    # msgpack carries the JSON values: the payload schema is the JSON schema
    assert messages["stock.low.v1"]["contentType"] == codecs.MSGPACK
    assert messages["stock.low.v1"]["payload"] == {"$ref": "#/components/schemas/StockLow"}
    assert doc["components"]["schemas"]["StockLow"]["properties"]["sku"]["type"] == "string"
    shipped_doc = messages["order.shipped.v1"]
    assert shipped_doc["contentType"] == codecs.PROTOBUF
    assert (
        shipped_doc["schemaFormat"] == PROTOBUF_SCHEMA_FORMAT == "application/vnd.google.protobuf;version=3"
    )
    assert shipped_doc["payload"] == proto_text(SHIPMENT)
    assert shipped_doc["x-edgeway-protobuf-message"] == "edgewaytest.OrderShipped"
    assert shipped_doc["x-edgeway-json-payload"] == {"$ref": "#/components/schemas/OrderShipped"}
    headers = doc["components"]["schemas"]["EdgewayHeaders"]["properties"]
    assert headers[H_CONTENT_TYPE]["enum"] == [codecs.MSGPACK, codecs.PROTOBUF]


def test_the_proto_text_of_a_message_is_source_protoc_accepts(tmp_path: Any) -> None:
    import subprocess
    import sys

    text = proto_text(SHIPMENT)
    assert text == (
        'syntax = "proto3";\n'
        "package edgewaytest;\n"
        "\n"
        "message OrderShipped {\n"
        "  string order_id = 1;\n"
        "  int64 weight_grams = 2;\n"
        "  repeated string items = 3;\n"
        "  .edgewaytest.Carrier carrier = 4;\n"
        "}\n"
        "\n"
        "enum Carrier {\n"
        "  CARRIER_UNKNOWN = 0;\n"
        "  CARRIER_POST = 1;\n"
        "}\n"
    )
    (tmp_path / "shipping.proto").write_text(text)
    compiled = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"--python_out={tmp_path}",
            "shipping.proto",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr


def test_the_proto_text_round_trips_nested_types_maps_oneofs_and_optional_fields(tmp_path: Any) -> None:
    import importlib.util
    import os
    import subprocess
    import sys

    from google.protobuf import timestamp_pb2

    field = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="edgeway_test/rich.proto", package="edgewaytest.rich")
    file.syntax = "proto3"
    file.dependency.append("google/protobuf/timestamp.proto")
    rich = file.message_type.add(name="Rich")
    line = rich.nested_type.add(name="Line")
    line.field.add(name="sku", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry = rich.nested_type.add(name="StockEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_INT64, label=field.LABEL_OPTIONAL)
    rich.oneof_decl.add(name="payment")
    rich.oneof_decl.add(name="_note")
    rich.field.add(
        name="lines",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".edgewaytest.rich.Rich.Line",
        label=field.LABEL_REPEATED,
    )
    rich.field.add(
        name="stock",
        number=2,
        type=field.TYPE_MESSAGE,
        type_name=".edgewaytest.rich.Rich.StockEntry",
        label=field.LABEL_REPEATED,
    )
    rich.field.add(name="card", number=3, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL, oneof_index=0)
    rich.field.add(name="voucher", number=4, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL, oneof_index=0)
    rich.field.add(
        name="note",
        number=5,
        type=field.TYPE_STRING,
        label=field.LABEL_OPTIONAL,
        oneof_index=1,
        proto3_optional=True,
    )
    rich.field.add(
        name="at",
        number=6,
        type=field.TYPE_MESSAGE,
        type_name=".google.protobuf.Timestamp",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(file)
    message = message_factory.GetMessageClass(pool.FindMessageTypeByName("edgewaytest.rich.Rich"))

    text = proto_text(message)
    assert 'import "google/protobuf/timestamp.proto";' in text
    assert "map<string, int64> stock = 2;" in text
    assert "optional string note = 5;" in text
    (tmp_path / "rich.proto").write_text(text)
    spec = importlib.util.find_spec("grpc_tools")
    assert spec is not None
    assert spec.origin is not None
    wellknown = os.path.join(os.path.dirname(spec.origin), "_proto")  # Google's own .proto files
    compiled = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{tmp_path}",
            f"-I{wellknown}",
            f"--descriptor_set_out={tmp_path / 'rich.pb'}",
            "rich.proto",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr
    parsed = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "rich.pb").read_bytes()).file[0]
    # The same message as the one the text was written from: fields, nested types, oneofs
    # (protoc adds the JSON names, which the hand-made descriptor leaves out).
    assert parsed.package == file.package
    for one in (parsed.message_type[0], *parsed.message_type[0].nested_type):
        for f in one.field:
            f.ClearField("json_name")
    assert parsed.message_type[0] == file.message_type[0]
