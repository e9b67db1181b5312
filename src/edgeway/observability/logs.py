"""The one JSON log format every edgeway process writes to standard output.

One JSON object per line, so a single pipeline (Promtail/Loki, Filebeat/Elasticsearch, Vector)
can collect every service whatever it is written in. The first seven keys are always present,
in this order; ``null`` when a value is unknown (outside a request, for instance):

========== ==================================================================================
key        value
========== ==================================================================================
time       RFC 3339 UTC with milliseconds and ``Z``: ``2024-05-01T12:00:00.123Z``
level      ``debug`` | ``info`` | ``warning`` | ``error`` | ``critical`` (lower case)
service    the service name given to :func:`setup_logging`
request_id the request id (``X-Request-ID``) of the request being served
trace_id   W3C trace id, 32 lower-case hex characters
span_id    the span id of this hop, 16 lower-case hex characters
message    the formatted log message
========== ==================================================================================

Then come the extra fields: ``logger`` (the logger name), anything passed with
``logger.info("...", extra={...})``, and ``exc_type``/``exc`` (the formatted traceback) when
an exception is logged. Extra keys never overwrite the seven above.

The gateway writes its access-log lines itself with the same keys; this module is the schema's
reference implementation.

At the default level (``info``) a process writes no line per poll or heartbeat: peers' polls of
a feed are access-logged at ``debug``, libraries that log every request they make (httpx) are
held at ``warning``, and loops that retry every second or so report a failure once per outage
(:class:`FailureLog`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

import orjson

__all__ = [
    "FailureLog",
    "JsonFormatter",
    "bind_request",
    "current_request_id",
    "current_span_id",
    "current_trace_id",
    "request_context",
    "setup_logging",
]

request_id_var: ContextVar[str | None] = ContextVar("edgeway_request_id", default=None)
trace_id_var: ContextVar[str | None] = ContextVar("edgeway_trace_id", default=None)
span_id_var: ContextVar[str | None] = ContextVar("edgeway_span_id", default=None)

# Attributes every LogRecord carries; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)
_RESERVED = ("time", "level", "service", "request_id", "trace_id", "span_id", "message")
# uvicorn passes its message again with terminal colour codes: noise in a JSON line.
_DROPPED = frozenset({"color_message"})
_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}
_INSTALLED = "_edgeway_json_handler"
# Libraries that log each request they make at INFO: a revocation feed or JWKS polled every
# second would be a line per poll. Held at WARNING unless the level is debug.
_CHATTY_LIBRARIES = ("httpx", "httpcore")


def current_request_id() -> str | None:
    return request_id_var.get()


def current_trace_id() -> str | None:
    return trace_id_var.get()


def current_span_id() -> str | None:
    return span_id_var.get()


def bind_request(request_id: str | None, trace_id: str | None, span_id: str | None) -> None:
    """Set the ids for the current task (and the tasks it starts)."""
    request_id_var.set(request_id)
    trace_id_var.set(trace_id)
    span_id_var.set(span_id)


@contextmanager
def request_context(
    request_id: str | None, trace_id: str | None = None, span_id: str | None = None
) -> Iterator[None]:
    """Bind the ids for the duration of a block, restoring the previous ones afterwards."""
    tokens = (request_id_var.set(request_id), trace_id_var.set(trace_id), span_id_var.set(span_id))
    try:
        yield
    finally:
        span_id_var.reset(tokens[2])
        trace_id_var.reset(tokens[1])
        request_id_var.reset(tokens[0])


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line in the edgeway schema (see the module docstring)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        # strftime per record costs ~1.5 µs; caching the per-second prefix makes the
        # timestamp nearly free when many lines are logged in the same second.
        self._second = -1
        self._prefix = ""

    def _timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        millis = int((created - second) * 1000)
        return f"{self._prefix}.{millis:03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._timestamp(record.created),
            "level": _LEVELS.get(record.levelno) or record.levelname.lower(),
            "service": self.service,
            "request_id": request_id_var.get(),
            "trace_id": trace_id_var.get(),
            "span_id": span_id_var.get(),
            "message": record.getMessage(),
            "logger": record.name,
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in _RESERVED and key not in _DROPPED:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to whatever ``sys.stdout`` is at emit time.

    Looking it up late keeps output going to the right place when a test runner or a process
    supervisor swaps ``sys.stdout`` after logging was set up.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup_logging(service: str, level: str | int = "info", *, uvicorn_access_log: bool = False) -> None:
    """Install the JSON formatter on the root logger and route uvicorn's loggers through it.

    Idempotent: calling it again replaces the handler it installed before (so the service name
    or level can change) and leaves handlers that others installed alone. uvicorn's own access
    log is switched off unless ``uvicorn_access_log`` is true, because the service kit's
    middleware writes a richer access line in this schema. httpx and httpcore, which log every
    request they make at INFO, log warnings only unless ``level`` is debug.
    """
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning, error or critical")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _INSTALLED, False):
            root.removeHandler(handler)
    handler = _StdoutHandler()
    setattr(handler, _INSTALLED, True)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        # uvicorn's own set-up (a Config made earlier in this process) leaves its level on its
        # loggers: the root's level decides here, or uvicorn's start line goes missing.
        logger.setLevel(logging.NOTSET)
    logging.getLogger("uvicorn.access").disabled = not uvicorn_access_log
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if numeric > logging.DEBUG else logging.NOTSET)


class FailureLog:
    """Reports a repeated operation's failures once per outage.

    For loops that retry every second or so (an outbox relay, a registry heartbeat, a claim scan):
    the first failure is logged at WARNING, the next ones at DEBUG, and the first success after
    them writes one INFO line saying how many attempts failed. A broker down for an hour is one
    warning and one recovery line, not 3,600 warnings.
    """

    __slots__ = ("failures", "logger", "what")

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0

    def failed(self, message: str, *args: object, exc_info: BaseException | None = None) -> None:
        self.failures += 1
        level = logging.WARNING if self.failures == 1 else logging.DEBUG
        if self.failures == 1 and self.logger.isEnabledFor(level):
            message += " (further failures are logged at debug until it works again)"
        self.logger.log(level, message, *args, exc_info=exc_info)

    def succeeded(self) -> None:
        if self.failures:
            self.logger.info("%s works again after %d failed attempts", self.what, self.failures)
            self.failures = 0
