"""Liveness and readiness, in the shape Kubernetes probes expect.

``GET /health/live`` answers 200 while the event loop turns: a probe that fails it means the
process is wedged and should be restarted. It runs no checks, on purpose: a database outage
must not make the orchestrator restart every service.

``GET /health/ready`` runs every registered check concurrently, each under its own timeout, and
answers 200 when all critical checks pass, 503 otherwise (also before start-up has finished and
once shutdown has begun, so the load balancer drains the instance). The body always lists each
check::

    {"status": "fail", "checks": [
        {"name": "database", "status": "ok", "latency_ms": 1.2, "critical": true},
        {"name": "broker", "status": "timeout", "latency_ms": 2000.4, "critical": true,
         "error": "no answer within 2.0s"}]}

A check is an async callable; it passes by returning (anything but ``False``) and fails by
returning ``False`` or raising.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.responses import Response

__all__ = ["Check", "CheckResult", "CheckStatus", "Health", "HealthReport"]

CheckFn = Callable[[], Awaitable[Any]]


class CheckStatus(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    fn: CheckFn
    timeout: float = 2.0
    critical: bool = True


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: CheckStatus
    latency_ms: float
    critical: bool
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "status": self.status.value,
            "latency_ms": round(self.latency_ms, 2),
            "critical": self.critical,
        }
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class HealthReport:
    ready: bool
    checks: tuple[CheckResult, ...]
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": "ok" if self.ready else "fail",
            "checks": [c.as_dict() for c in self.checks],
        }
        if self.reason is not None:
            out["reason"] = self.reason
        return out


class Health:
    """The checks of one service and its lifecycle gate (starting → serving → stopping)."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}
        self.started = False
        self.stopping = False

    def add(self, name: str, fn: CheckFn, *, timeout: float = 2.0, critical: bool = True) -> None:
        """Register a readiness check; a non-critical one is reported but never fails readiness."""
        if name in self._checks:
            raise ValueError(f"a health check named {name!r} is already registered")
        if timeout <= 0:
            raise ValueError(f"health check {name!r}: timeout must be positive (seconds)")
        self._checks[name] = Check(name, fn, timeout, critical)

    def check(
        self, name: str, *, timeout: float = 2.0, critical: bool = True
    ) -> Callable[[CheckFn], CheckFn]:
        """Decorator form of :meth:`add`."""

        def register(fn: CheckFn) -> CheckFn:
            self.add(name, fn, timeout=timeout, critical=critical)
            return fn

        return register

    @property
    def names(self) -> list[str]:
        return list(self._checks)

    async def run(self) -> HealthReport:
        results = tuple(await asyncio.gather(*(_run_one(c) for c in self._checks.values())))
        reason: str | None = None
        if not self.started:
            reason = "starting"
        elif self.stopping:
            reason = "shutting down"
        ok = all(r.status is CheckStatus.OK for r in results if r.critical)
        return HealthReport(ready=ok and reason is None, checks=results, reason=reason)

    def router(self) -> APIRouter:
        router = APIRouter(tags=["health"])

        @router.get("/health/live", include_in_schema=False)
        async def live() -> Response:
            return Response(b'{"status":"ok"}', media_type="application/json")

        @router.get("/health/ready", include_in_schema=False)
        async def ready() -> Response:
            report = await self.run()
            return Response(
                orjson.dumps(report.as_dict()),
                status_code=200 if report.ready else 503,
                media_type="application/json",
                headers={"Cache-Control": "no-store"},
            )

        return router


async def _run_one(check: Check) -> CheckResult:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout):
            outcome = await check.fn()
    except TimeoutError:
        return CheckResult(
            check.name,
            CheckStatus.TIMEOUT,
            _ms(start),
            check.critical,
            f"no answer within {check.timeout}s",
        )
    except Exception as exc:
        return CheckResult(
            check.name, CheckStatus.FAIL, _ms(start), check.critical, f"{type(exc).__name__}: {exc}"
        )
    if outcome is False:
        return CheckResult(check.name, CheckStatus.FAIL, _ms(start), check.critical, "check returned False")
    return CheckResult(check.name, CheckStatus.OK, _ms(start), check.critical)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
