from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import orjson
import pytest

from edgeway.observability.logs import JsonFormatter, request_context, setup_logging

KEYS = ["time", "level", "service", "request_id", "trace_id", "span_id", "message"]
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def json_logs() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    setup_logging("orders", "debug")
    yield
    for handler in list(root.handlers):
        if getattr(handler, "_edgeway_json_handler", False):
            root.removeHandler(handler)
    root.setLevel(level)


def lines(out: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_one_json_line_per_record_with_the_schema_keys_first(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    log = logging.getLogger("orders.test")
    with request_context("req-1", "a" * 32, "b" * 16):
        log.info("order %s placed", 42, extra={"order_id": 42, "amount": 9.5})
    log.warning("outside")
    first, second = lines(capsys.readouterr().out)
    assert list(first)[:7] == KEYS
    assert TIME.fullmatch(str(first["time"]))
    assert first["level"] == "info"
    assert first["service"] == "orders"
    assert (first["request_id"], first["trace_id"], first["span_id"]) == ("req-1", "a" * 32, "b" * 16)
    assert first["message"] == "order 42 placed"
    assert (first["order_id"], first["amount"], first["logger"]) == (42, 9.5, "orders.test")
    assert second["level"] == "warning"
    assert second["request_id"] is None


def test_exceptions_are_logged_with_type_and_traceback(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("x").exception("failed")
    [entry] = lines(capsys.readouterr().out)
    assert entry["level"] == "error"
    assert entry["exc_type"] == "ValueError"
    assert "bad value" in str(entry["exc"])


def test_extra_fields_cannot_overwrite_schema_keys() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "real", None, None)
    record.__dict__["service"] = "spoofed"
    record.__dict__["level"] = "critical"
    entry = orjson.loads(JsonFormatter("orders").format(record))
    assert (entry["service"], entry["level"], entry["message"]) == ("orders", "info", "real")


def test_unserialisable_extras_are_rendered_as_strings() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.__dict__["thing"] = object()
    assert str(orjson.loads(JsonFormatter("s").format(record))["thing"]).startswith("<object object")


def test_milliseconds_are_truncated_and_utc() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.created = 1714564800.1239
    assert orjson.loads(JsonFormatter("s").format(record))["time"] == "2024-05-01T12:00:00.123Z"


def test_setup_is_idempotent_and_routes_uvicorn_loggers(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("orders", "info")
    setup_logging("orders", "info")
    installed = [h for h in logging.getLogger().handlers if getattr(h, "_edgeway_json_handler", False)]
    assert len(installed) == 1
    logging.getLogger("uvicorn.error").info("started")
    [entry] = lines(capsys.readouterr().out)
    assert entry["logger"] == "uvicorn.error"
    assert logging.getLogger("uvicorn.access").disabled


def test_a_level_uvicorn_left_on_its_logger_does_not_hide_its_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # uvicorn.Config(log_level="warning"), made earlier in the process, sets this level
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    root = logging.getLogger()
    level = root.level
    try:
        setup_logging("orders", "info")
        logging.getLogger("uvicorn.error").info("started")
        [entry] = lines(capsys.readouterr().out)
        assert entry["message"] == "started"
    finally:
        root.handlers = [h for h in root.handlers if not getattr(h, "_edgeway_json_handler", False)]
        root.setLevel(level)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("s", "loud")


def test_libraries_that_log_every_request_are_held_at_warning_unless_debugging() -> None:
    root = logging.getLogger()
    level = root.level
    try:
        setup_logging("gw", "info")
        # httpx writes "HTTP Request: GET ..." at INFO: a revocation feed polled every second
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpcore.connection").isEnabledFor(logging.INFO)
        assert logging.getLogger("httpx").isEnabledFor(logging.WARNING)
        setup_logging("gw", "debug")
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
    finally:
        for handler in list(root.handlers):
            if getattr(handler, "_edgeway_json_handler", False):
                root.removeHandler(handler)
        root.setLevel(level)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_uvicorns_colour_copy_of_the_message_is_not_written(
    json_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]",
        7,
        extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"},
    )
    [entry] = lines(capsys.readouterr().out)
    assert entry["message"] == "Started server process [7]"
    assert "color_message" not in entry


def test_a_failure_log_warns_once_per_outage_and_says_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from edgeway.observability.logs import FailureLog

    log = logging.getLogger("relay.test")
    failures = FailureLog(log, "the relay")
    with caplog.at_level(logging.DEBUG, logger="relay.test"):
        for n in range(5):
            failures.failed("publish failed: %s", f"attempt {n}")
        failures.succeeded()
        failures.succeeded()
        failures.failed("publish failed: %s", "again")
    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert levels[0][0] == "WARNING"
    assert "attempt 0" in levels[0][1]
    assert [lv for lv, _ in levels[1:5]] == ["DEBUG"] * 4
    assert levels[5] == ("INFO", "the relay works again after 5 failed attempts")
    assert levels[6][0] == "WARNING"
    assert "again" in levels[6][1]
    assert len(levels) == 7
