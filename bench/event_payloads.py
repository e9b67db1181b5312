"""``python -m bench event-payloads``: one event as JSON, msgpack and protobuf on the bus.

For each encoding an event class can declare (:mod:`edgeway.bus.codecs`): the payload's size,
and the CPU µs to wrap one event for publishing (``envelope_for``: id, headers, encoding) and to
decode one received payload into the event class (what a consumer pays before its handler),
each the median of ``--repetitions`` runs of ``--events`` events in this process.

    python -m bench event-payloads --json
"""

from __future__ import annotations

import json as jsonlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.rpc_peer import compile_proto

PROTO = """\
syntax = "proto3";
package payloadbench;

message OrderShipped {
  string order_id = 1;
  int64 weight_grams = 2;
  repeated string items = 3;
  string carrier = 4;
  int64 shipped_at_ms = 5;
}
"""

EVENT: dict[str, Any] = {
    "order_id": "o-0001234",
    "weight_grams": 1250,
    "items": ["sku-00042", "sku-00043", "sku-00044"],
    "carrier": "post",
    "shipped_at_ms": 1_796_000_000_000,
}


def _classes(message: Any) -> tuple[dict[str, type[Any]], type[Any]]:
    from edgeway.bus import codecs
    from edgeway.bus.events import Event

    class Shipped(Event):  # the fields; each encoding below is a producer's choice of it
        order_id: str
        weight_grams: int
        items: list[str]
        carrier: str
        shipped_at_ms: int

    class AsJson(Shipped):
        channel = "bench"
        event_type = "order.shipped.v1"

    class AsMsgpack(AsJson):
        content_type = codecs.MSGPACK

    class AsProtobuf(AsJson):
        protobuf = message
        content_type = codecs.PROTOBUF

    class Reader(AsJson):  # a consumer's class: publishes JSON, reads all three
        protobuf = message
        content_type = codecs.JSON

    return {codecs.JSON: AsJson, codecs.MSGPACK: AsMsgpack, codecs.PROTOBUF: AsProtobuf}, Reader


def _per_event(work: Any, events: int) -> float:
    started = time.process_time()
    for _ in range(events):
        work()
    return (time.process_time() - started) / events * 1e6


def run(json: bool = False, events: int = 20_000, repetitions: int = 3) -> dict[str, Any]:
    from bench.rpc_peer import load_proto
    from edgeway.bus.events import decode, envelope_for

    directory = Path(tempfile.mkdtemp(prefix="edgeway-bench-payloads-"))
    try:
        pb2, _ = load_proto(compile_proto(directory, "payloadbench", PROTO), "payloadbench")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    classes, reader = _classes(pb2.OrderShipped)
    result: dict[str, Any] = {}
    for content_type, cls in classes.items():
        event = cls(**EVENT)
        envelope = envelope_for(event)
        encode = [_per_event(lambda event=event: envelope_for(event), events) for _ in range(repetitions)]
        read = [
            _per_event(lambda envelope=envelope: decode(reader, envelope), events) for _ in range(repetitions)
        ]
        result[content_type] = {
            "payload_bytes": len(envelope.payload),
            "encode_us": round(statistics.median(encode), 2),
            "decode_us": round(statistics.median(read), 2),
        }
    result["events"] = events
    result["repetitions"] = repetitions
    if json:
        print(jsonlib.dumps(result))
        return result
    print(f"{'content type':<24}{'bytes':>7}{'encode µs':>11}{'decode µs':>11}")
    for content_type in classes:
        f = result[content_type]
        print(f"{content_type:<24}{f['payload_bytes']:>7}{f['encode_us']:>11.2f}{f['decode_us']:>11.2f}")
    return result
