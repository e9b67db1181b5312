"""The gRPC health check of an instance: ``grpc.health.v1.Health/Check`` over HTTP/2.

What Kubernetes' ``grpc`` probe, Envoy and the gRPC clients ask: the instance answers
``SERVING``, ``NOT_SERVING`` (starting, stopping, a dependency down) or an error status
(``NOT_FOUND`` for a service name it does not serve). Only ``SERVING`` passes. Like the HTTP
check, each check opens its own connection (TLS with the traffic's context when the instance
is reached over TLS) and closes it.

The two messages are one string and one enum field; they are written and read here by hand
(protobuf's wire format for field 1), so the base install checks gRPC instances without the
``grpc`` extra.
"""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING, Final

from edgeway.http.errors import HttpError
from edgeway.http.h2_upstream import H2UpstreamConnection
from edgeway.http.pool import open_connection

if TYPE_CHECKING:
    from edgeway.resilience.health import Probed

__all__ = ["check_request", "probe_grpc", "serving_status"]

_PATH: Final = b"/grpc.health.v1.Health/Check"
# HealthCheckResponse.ServingStatus
_STATUS_NAMES: Final = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
SERVING: Final = 1


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def check_request(service: str) -> bytes:
    """The length-prefixed gRPC message of ``HealthCheckRequest{service}``."""
    name = service.encode()
    message = b"\x0a" + _varint(len(name)) + name if name else b""
    return b"\0" + struct.pack(">I", len(message)) + message


def serving_status(body: bytes) -> int:
    """The ``status`` of the ``HealthCheckResponse`` in a gRPC response body (0 when absent,
    as protobuf's default); ValueError for a body that is not one such message."""
    if len(body) < 5 or body[0] != 0:
        raise ValueError("the answer is not one uncompressed gRPC message")
    (size,) = struct.unpack(">I", body[1:5])
    message = body[5 : 5 + size]
    if len(message) != size:
        raise ValueError("the gRPC message is cut short")
    status = 0
    i = 0
    while i < len(message):
        key = message[i]
        i += 1
        if key == 0x08:  # field 1, varint
            status, shift = 0, 0
            while True:
                byte = message[i]
                i += 1
                status |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
        else:
            raise ValueError(f"unexpected field (key {key:#x}) in a HealthCheckResponse")
    return status


async def probe_grpc(target: Probed, service: str, timeout: float) -> tuple[bool, str]:
    """One gRPC check: (passed, reason); never raises for a failing instance."""
    instance = f"{target.host}:{target.port}"
    loop = asyncio.get_running_loop()
    conn: H2UpstreamConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            conn = await open_connection(
                lambda: H2UpstreamConnection(instance, loop),
                target.host,
                target.port,
                instance,
                target.tls,
                target.server_hostname,
            )
            scheme = b"https" if target.tls is not None else b"http"
            stream = conn.open_stream(
                [
                    (b":method", b"POST"),
                    (b":scheme", scheme),
                    (b":authority", target.authority),
                    (b":path", _PATH),
                    (b"content-type", b"application/grpc"),
                    (b"te", b"trailers"),
                    (b"user-agent", b"edgeway-health-check"),
                    (b"grpc-timeout", b"%dm" % max(1, int(timeout * 1000))),
                ]
            )
            await stream.send(check_request(service), end_stream=True)
            head = dict(await stream.response())
            chunks = []
            while chunk := await stream.read():
                chunks.append(chunk)
            trailers = dict(stream.trailers or ())
    except TimeoutError:
        return False, f"no answer within {timeout:g}s"
    except OSError as exc:
        return False, f"cannot connect: {exc.strerror or exc}"
    except HttpError as exc:
        return False, str(exc)
    finally:
        if conn is not None:
            conn.close()
    if head.get(b":status") != b"200":
        return False, f"answered HTTP {head.get(b':status', b'?').decode()}"
    # A trailers-only answer carries its status in the headers.
    grpc_status = trailers.get(b"grpc-status", head.get(b"grpc-status"))
    if grpc_status != b"0":
        message = trailers.get(b"grpc-message", head.get(b"grpc-message", b"")).decode("utf-8", "replace")
        code = grpc_status.decode() if grpc_status is not None else "none"
        return False, f"grpc-status {code}" + (f": {message}" if message else "")
    try:
        status = serving_status(b"".join(chunks))
    except (ValueError, IndexError) as exc:
        return False, f"unreadable HealthCheckResponse: {exc}"
    name = _STATUS_NAMES.get(status, str(status))
    return status == SERVING, name
