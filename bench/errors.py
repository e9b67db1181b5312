"""Errors of the benchmark harness.

    BenchError                  base; every error the harness raises on purpose
    ├── ToolMissing             a required program (wrk, nginx) is not installed
    ├── ProcessFailed           a started process exited early or never opened its port
    └── WrkFailed               wrk exited with an error or printed no result line

The message always says what to do next (install a package, read a log file).
"""

from __future__ import annotations


class BenchError(Exception):
    """Base of the harness's errors."""


class ToolMissing(BenchError):
    def __init__(self, tool: str, hint: str) -> None:
        super().__init__(f"{tool} is not installed: {hint}")
        self.tool = tool


class ProcessFailed(BenchError):
    def __init__(self, name: str, reason: str, log_tail: str = "") -> None:
        message = f"{name}: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)
        self.name = name
        self.log_tail = log_tail


class WrkFailed(BenchError):
    def __init__(self, reason: str, output: str = "") -> None:
        message = f"wrk failed: {reason}"
        if output:
            message += f"\n--- wrk output ---\n{output[-2000:]}"
        super().__init__(message)
