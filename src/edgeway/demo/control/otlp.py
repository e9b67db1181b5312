"""The OTLP/HTTP trace receiver's decoding: ``POST /v1/traces`` bodies into :class:`Hop` records.

The demo's processes export their spans the standard way (``OTEL_EXPORTER_OTLP_ENDPOINT``, see
:mod:`edgeway.observability.tracing`): an ``ExportTraceServiceRequest`` as protobuf
(``application/x-protobuf``, what the Python SDK sends) or as OTLP/JSON (``application/json``:
hex ids, camelCase keys, 64-bit integers as strings), optionally gzip-compressed. Both are
decoded here, with the message types of ``opentelemetry-proto``; the answer is the matching
empty ``ExportTraceServiceResponse``.

A body that cannot be decoded is a :class:`OtlpError` with the HTTP status to answer (400, 413,
415): the exporter logs it and drops that batch, as the protocol says.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from edgeway.demo.control.spans import Hop, Kind, node_of_service

__all__ = ["MAX_BODY", "OtlpError", "decode_export", "export_response"]

MAX_BODY = 8 * 1024 * 1024  # decompressed; the SDK's batches are far smaller
_MAX_ATTRIBUTES = 24
_MAX_TEXT = 200
_KINDS: dict[int, Kind] = {
    0: "internal",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
_STATUS_ERROR = 2
_SERVER = 2
_HTTP_STATUS = ("http.response.status_code", "http.status_code")
PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class OtlpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def export_response(content_type: str) -> tuple[bytes, str]:
    """The success answer, in the encoding the request used."""
    if _is_json(content_type):
        return b"{}", JSON
    return ExportTraceServiceResponse().SerializeToString(), PROTOBUF


def decode_export(body: bytes, content_type: str, content_encoding: str | None = None) -> list[Hop]:
    data = _decompress(body, (content_encoding or "").strip().lower())
    if _is_json(content_type):
        return list(_from_json(data))
    if content_type.split(";")[0].strip().lower() not in (PROTOBUF, "application/protobuf"):
        raise OtlpError(415, f"expected {PROTOBUF} or {JSON}, got {content_type or 'no content type'}")
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise OtlpError(400, f"not an ExportTraceServiceRequest: {exc}") from None
    return list(_from_protobuf(request))


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == JSON


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        if len(body) > MAX_BODY:
            raise OtlpError(413, f"the body is larger than {MAX_BODY} bytes")
        return body
    if encoding != "gzip":
        raise OtlpError(415, f"Content-Encoding {encoding!r} is not supported (gzip or none)")
    # Bounded: a small gzip bomb must not take the demo's memory.
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_BODY + 1)
    except zlib.error as exc:
        raise OtlpError(400, f"the gzip body is corrupt: {exc}") from None
    if len(data) > MAX_BODY or inflater.unconsumed_tail:
        raise OtlpError(413, f"the body inflates to more than {MAX_BODY} bytes")
    if not inflater.eof:
        raise OtlpError(400, "the gzip body is truncated")
    return data


# -- protobuf ------------------------------------------------------------------------------------


def _any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_value(v) for v in value.array_value.values[:_MAX_ATTRIBUTES]]
    if which == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()[:_MAX_TEXT]
    found = getattr(value, which)
    return found[:_MAX_TEXT] if isinstance(found, str) else found


def _attributes(items: Iterable[KeyValue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if len(out) >= _MAX_ATTRIBUTES:
            break
        out[item.key] = _any_value(item.value)
    return out


def _from_protobuf(request: ExportTraceServiceRequest) -> Iterable[Hop]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        service = str(resource.get("service.name") or "unknown")
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield _hop(
                    service,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex() or None,
                    name=span.name,
                    kind=span.kind,
                    start=span.start_time_unix_nano,
                    end=span.end_time_unix_nano,
                    status_code=span.status.code,
                    attributes=_attributes(span.attributes),
                    events=[e.name for e in span.events],
                )


# -- OTLP/JSON -----------------------------------------------------------------------------------


def _get(d: Mapping[str, Any], camel: str, snake: str) -> Any:
    return d[camel] if camel in d else d.get(snake)


def _json_value(value: Any) -> Any:
    if not isinstance(value, Mapping) or not value:
        return None
    key, inner = next(iter(value.items()))
    if key in ("arrayValue", "array_value"):
        return [_json_value(v) for v in (inner or {}).get("values", [])[:_MAX_ATTRIBUTES]]
    if key in ("kvlistValue", "kvlist_value"):
        return _json_attributes((inner or {}).get("values", []))
    if key in ("intValue", "int_value"):
        return int(inner)
    return inner[:_MAX_TEXT] if isinstance(inner, str) else inner


def _json_attributes(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        if len(out) >= _MAX_ATTRIBUTES:
            break
        if isinstance(item, Mapping) and isinstance(item.get("key"), str):
            out[item["key"]] = _json_value(item.get("value"))
    return out


def _from_json(data: bytes) -> Iterable[Hop]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(400, f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise OtlpError(400, "an ExportTraceServiceRequest is a JSON object")
    hops = []
    try:
        for resource_spans in _get(document, "resourceSpans", "resource_spans") or ():
            resource = _json_attributes((resource_spans.get("resource") or {}).get("attributes"))
            service = str(resource.get("service.name") or "unknown")
            for scope_spans in _get(resource_spans, "scopeSpans", "scope_spans") or ():
                for span in scope_spans.get("spans") or ():
                    status = span.get("status") or {}
                    hops.append(
                        _hop(
                            service,
                            trace_id=_hex_id(_get(span, "traceId", "trace_id"), 32, "traceId"),
                            span_id=_hex_id(_get(span, "spanId", "span_id"), 16, "spanId"),
                            parent_id=_get(span, "parentSpanId", "parent_span_id") or None,
                            name=str(span.get("name", "")),
                            kind=int(span.get("kind") or 0),
                            start=int(_get(span, "startTimeUnixNano", "start_time_unix_nano") or 0),
                            end=int(_get(span, "endTimeUnixNano", "end_time_unix_nano") or 0),
                            status_code=int(status.get("code") or 0),
                            attributes=_json_attributes(span.get("attributes")),
                            events=[str(e.get("name", "")) for e in span.get("events") or ()],
                        )
                    )
    except (AttributeError, TypeError, ValueError) as exc:
        raise OtlpError(400, f"not an OTLP/JSON ExportTraceServiceRequest: {exc}") from None
    return hops


def _hex_id(value: Any, length: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != length:
        raise ValueError(f"{what} must be {length} hex digits, got {value!r}")
    int(value, 16)
    return value.lower()


# -- both ----------------------------------------------------------------------------------------


def _hop(
    service: str,
    *,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    kind: int,
    start: int,
    end: int,
    status_code: int,
    attributes: dict[str, Any],
    events: list[str],
) -> Hop:
    http_status = next((attributes[k] for k in _HTTP_STATUS if isinstance(attributes.get(k), int)), None)
    path = attributes.get("url.path")
    if kind == _SERVER and isinstance(path, str) and "/" not in name:
        # A gateway names its request's span by route ("POST place-order"); the waterfall and
        # the list read better with the path, as the access log has it. The route stays.
        method, _, route = name.partition(" ")
        name = f"{method} {path}"
        if route:
            attributes.setdefault("edgeway.route", route)
    return Hop(
        trace_id=trace_id,
        span_id=span_id,
        parent_id=parent_id,
        node=node_of_service(service),
        name=name[:_MAX_TEXT],
        kind=_KINDS.get(kind, "internal"),
        start_ns=start,
        end_ns=max(start, end),
        error=status_code == _STATUS_ERROR or (http_status is not None and http_status >= 500),
        status=http_status,
        attributes=attributes,
        events=events[:_MAX_ATTRIBUTES],
    )
