"""Request ids and W3C trace context, shared by the gateway engine and the service kit.

The gateway keeps a client's ``X-Request-ID`` only when it is well-formed (so ids cannot carry
log-injection payloads or blow up log lines) and otherwise makes one. ``traceparent`` follows
W3C Trace Context level 1: ``00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>``.
"""

from __future__ import annotations

import random
import re
from binascii import hexlify
from typing import Final

# 1..128 visible characters from a conservative alphabet: enough for UUIDs, ULIDs and the
# ids other gateways emit, nothing that needs escaping in a log line or a header.
_REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:+=/-]{1,128}")
_TRACEPARENT: Final = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE: Final = b"0" * 32
_ZERO_SPAN: Final = b"0" * 16


# Ids need to be unique, not secret: the Mersenne Twister gives 128 random bits in ~0.1 µs where
# os.urandom costs a syscall (~1 µs) and the gateway makes three ids per request. hexlify of the
# bytes is about twice as fast as formatting the int with %x.
_bits: Final = random.getrandbits


def _random_hex(nbytes: int) -> bytes:
    """``2 * nbytes`` random lowercase hex characters, never all zeros (W3C forbids those)."""
    return hexlify((_bits(nbytes * 8) or 1).to_bytes(nbytes, "little"))


def new_request_id() -> bytes:
    """A random 128-bit id as 32 hex characters."""
    return _random_hex(16)


def new_request_ids() -> tuple[bytes, bytes, bytes]:
    """A request id, a trace id and a span id for a request that brought none: one random draw
    cut in three (a third of the cost of three draws; the gateway does this per request)."""
    h = hexlify(_bits(320).to_bytes(40, "little"))
    trace_id, span_id = h[32:64], h[64:80]
    if trace_id == _ZERO_TRACE:  # W3C forbids all-zero ids; p = 2**-128
        trace_id = new_trace_id()
    if span_id == _ZERO_SPAN:  # p = 2**-64
        span_id = new_span_id()
    return h[:32], trace_id, span_id


def valid_request_id(value: bytes) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def new_trace_id() -> bytes:
    return _random_hex(16)


def new_span_id() -> bytes:
    return _random_hex(8)


class TraceParent:
    # A plain class, not a NamedTuple: the gateway makes one or two per request, and in a
    # compiled build (mypyc) a class is built in C where a NamedTuple runs a generated Python
    # __new__.
    __slots__ = ("flags", "parent_id", "trace_id")

    def __init__(self, trace_id: bytes, parent_id: bytes, flags: bytes) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.flags = flags

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TraceParent):
            return NotImplemented
        return (self.trace_id, self.parent_id, self.flags) == (other.trace_id, other.parent_id, other.flags)

    def __hash__(self) -> int:
        return hash((self.trace_id, self.parent_id, self.flags))

    def __repr__(self) -> str:
        return f"TraceParent({self.encode().decode()!r})"

    def encode(self) -> bytes:
        return b"00-" + self.trace_id + b"-" + self.parent_id + b"-" + self.flags

    def child(self) -> TraceParent:
        """The context to send downstream: same trace, a new span id for this hop."""
        return TraceParent(self.trace_id, new_span_id(), self.flags)


def parse_traceparent(value: bytes) -> TraceParent | None:
    """Parse a traceparent header; None when it is malformed or uses the all-zero ids."""
    m = _TRACEPARENT.fullmatch(value.strip())
    if m is None:
        return None
    version, trace_id, parent_id, flags = m.groups()
    if version == b"ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id, parent_id, flags)


def new_traceparent(sampled: bool = True) -> TraceParent:
    return TraceParent(new_trace_id(), new_span_id(), b"01" if sampled else b"00")
