"""A gRPC status as the gateway's answer: the HTTP status it stands for (google.rpc's mapping:
NOT_FOUND 404, INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, UNAVAILABLE 503,
DEADLINE_EXCEEDED 504...) and an RFC 9457 problem whose ``detail`` is the status message.

The problem carries ``grpc_status`` (the code's name) and, when the service sent the rich error
model (``grpc-status-details-bin``), its ``reason`` (``ErrorInfo``) and ``errors``
(``BadRequest`` field violations: ``{field, description}``), which is what a client fixes a
request by. A ``type`` in the ``ErrorInfo`` metadata (where the service kit puts a problem's
type) becomes the problem's ``type``: the client gets the problem the service raised, whichever
protocol it crossed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2
from google.protobuf.message import DecodeError

from edgeway.gateway.actions.transcode.invoker import GrpcFailure
from edgeway.gateway.core.errors import Rejection
from edgeway.http.grpc_wire import DETAILS_KEY
from edgeway.http.headers import reason_phrase

__all__ = ["failure_members", "failure_problem"]


def _details(trailers: Sequence[tuple[str, str | bytes]]) -> dict[str, Any]:
    raw = next((value for key, value in trailers if key == DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return {}
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except DecodeError:
        return {}
    out: dict[str, Any] = {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            out["reason"] = info.reason
            kind = info.metadata.get("type")
            if kind:
                out["type"] = kind
        elif detail.Unpack(bad):
            out["errors"] = [{"field": v.field, "description": v.description} for v in bad.field_violations]
    return out


def failure_members(failure: GrpcFailure) -> dict[str, Any]:
    """What the problem (or an aggregate's ``_meta``) says about the failed call."""
    return {"grpc_status": failure.code.name, **_details(failure.trailers)}


def failure_problem(failure: GrpcFailure, service: str) -> Rejection:
    status = failure.status
    detail = failure.details or f"{service} answered {failure.code.name}"
    return Rejection(
        status,
        reason_phrase(status).decode(),
        detail,
        members={**failure_members(failure), "service": service},
    )
