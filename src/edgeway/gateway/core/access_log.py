"""One JSON access-log line per request, in the common edgeway log schema (see
:mod:`edgeway.observability.logs`), written to standard output.

Lines are batched into a buffer that is written with one ``write`` per event-loop turn, or sooner
when it passes 64 KiB. A syscall per request would cost more than the rest of the log work
together; a blocking stdout (a slow pipe) still only stalls one write per batch.

The usual line (a proxied request whose path needs no JSON escaping) is one literal bytes format
of constant JSON text and the request's own bytes (compiled: one copy into a new bytes): no
dict, no serialiser. Any other line goes through a dict and
orjson. Both give the same JSON (tests/gateway/test_access_log_format.py checks it on arbitrary
input).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any, BinaryIO, Final

import orjson

from edgeway.http.exchange import Exchange
from edgeway.observability.timefmt import THOUSANDTHS, Rfc3339Stamper

# Per request: C statics in a compiled build, not attribute lookups on the module.
_perf_counter: Final = time.perf_counter
_wall_clock: Final = time.time

_FLUSH_AT: Final = 64 * 1024

# Printable ASCII without '"' and '\\': such text is its own JSON string body.
_PLAIN: Final = re.compile(rb"[ !#-\[\]-~]*")
_INFO: Final = b"info"
_ERROR: Final = b"error"
_JSON_CACHE_MAX: Final = 4096  # route ids, upstream labels and client addresses, as JSON strings


class AccessLog:
    def __init__(self, service: str, stream: BinaryIO | None = None) -> None:
        self.service = service
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._buf: list[bytes] = []
        self._size = 0
        self._scheduled = False
        self._stamp = Rfc3339Stamper()
        self._service_json = orjson.dumps(service)
        self._json: dict[str | None, bytes] = {}
        self.lost = 0  # bytes of log that could not be written

    def _as_json(self, value: str | None) -> bytes:
        known = self._json.get(value)
        if known is None:
            if len(self._json) >= _JSON_CACHE_MAX:
                self._json.clear()
            known = self._json[value] = orjson.dumps(value)
        return known

    def record(self, ex: Exchange, route: str | None, trace_id: bytes, span_id: bytes) -> None:
        """Log ``ex``. Its request id must be well-formed (``ids.valid_request_id``), as the
        gateway makes it before routing: the template writes it unescaped."""
        log = ex.log
        upstream = log.get("upstream")
        if (
            trace_id
            and span_id
            and len(log) == (0 if upstream is None else 1)
            and (upstream is None or isinstance(upstream, str))
            # The method needs no check: the parser accepts only the registered method tokens.
            and _PLAIN.fullmatch(ex.path) is not None
        ):
            status = ex.status
            micros = int((_perf_counter() - ex.started) * 1_000_000)
            path = ex.path
            # One literal format: compiled, it is one length pass and one copy into a new bytes
            # (mypyc's bytes build); 30 pieces left in the buffer cost ~3,000 instructions more
            # when the batch is joined (the buffer protocol per piece).
            line = (
                b'{"time":"%b","level":"%b","service":%b,"request_id":"%b","trace_id":"%b",'
                b'"span_id":"%b","message":"request","client":%b,"method":"%b","path":"%b",'
                b'"route":%b,"status":%d,"upstream":%b,"duration_ms":%d%b,"bytes_in":%d,'
                b'"bytes_out":%d}\n'
            ) % (
                self._stamp.stamp_bytes(_wall_clock()),
                _INFO if status < 500 else _ERROR,
                self._service_json,
                ex.request_id,
                trace_id,
                span_id,
                self._as_json(ex.client),
                ex.method,
                path,
                self._as_json(route),
                status,
                self._as_json(upstream),
                micros // 1000,
                THOUSANDTHS[micros % 1000],
                ex.body.received,
                ex.bytes_out,
            )
            self._buf.append(line)
            self._size += len(line)
            self._after_append()
            return
        self.write(orjson.dumps(self.entry(ex, route, trace_id, span_id)) + b"\n")

    def entry(self, ex: Exchange, route: str | None, trace_id: bytes, span_id: bytes) -> dict[str, Any]:
        """The access-log line of ``ex`` as a dict (what :meth:`record` writes, as JSON)."""
        now = time.time()
        entry: dict[str, Any] = {
            "time": self._stamp(now),
            "level": "info" if ex.status < 500 else "error",
            "service": self.service,
            "request_id": ex.request_id.decode(errors="replace"),
            "trace_id": trace_id.decode() if trace_id else None,
            "span_id": span_id.decode() if span_id else None,
            "message": "request",
            "client": ex.client,
            "method": ex.method.decode(errors="replace"),
            "path": ex.path.decode(errors="replace"),
            "route": route,
            "status": ex.status,
            "upstream": ex.log.get("upstream"),
            "duration_ms": round((time.perf_counter() - ex.started) * 1000, 3),
            "bytes_in": ex.body.received,
            "bytes_out": ex.bytes_out,
        }
        if len(ex.log) > 1 or "upstream" not in ex.log:
            for k, v in ex.log.items():
                entry.setdefault(k, v)
        return entry

    def event(self, level: str, message: str, **fields: Any) -> None:
        """A non-request line (rejections, lifecycle) in the same schema."""
        entry: dict[str, Any] = {
            "time": self._stamp(time.time()),
            "level": level,
            "service": self.service,
            "request_id": None,
            "trace_id": None,
            "span_id": None,
            "message": message,
        }
        for k, v in fields.items():
            entry.setdefault(k, v)
        self.write(orjson.dumps(entry) + b"\n")

    def write(self, line: bytes) -> None:
        self._buf.append(line)
        self._size += len(line)
        self._after_append()

    def _after_append(self) -> None:
        if self._size >= _FLUSH_AT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        self._scheduled = False
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        self._size = 0
        try:
            self._stream.write(data)
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            # stdout went away (pipe closed): logging must never take the gateway down.
            self.lost += len(data)
