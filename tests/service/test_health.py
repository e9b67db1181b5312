from __future__ import annotations

import asyncio

import httpx
import pytest
from servers import serve

from edgeway.service import ServiceSettings, create_app
from edgeway.service.health import CheckStatus, Health


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionRefusedError("db down")


async def slow() -> None:
    await asyncio.sleep(5)


async def says_no() -> bool:
    return False


async def test_ready_when_every_critical_check_passes() -> None:
    health = Health()
    health.add("db", ok)
    health.add("cache", broken, critical=False)
    health.started = True
    report = await health.run()
    assert report.ready
    assert [(c.name, c.status) for c in report.checks] == [
        ("db", CheckStatus.OK),
        ("cache", CheckStatus.FAIL),
    ]


async def test_a_slow_check_times_out_without_delaying_the_others() -> None:
    health = Health()
    health.add("slow", slow, timeout=0.1)
    health.add("db", ok)
    health.started = True
    report = await health.run()
    assert not report.ready
    slow_result = report.checks[0]
    assert slow_result.status is CheckStatus.TIMEOUT
    assert 90 <= slow_result.latency_ms < 1000
    assert slow_result.error == "no answer within 0.1s"


async def test_a_check_returning_false_fails() -> None:
    health = Health()
    health.add("flag", says_no)
    health.started = True
    assert (await health.run()).checks[0].error == "check returned False"


async def test_not_ready_before_start_and_while_stopping() -> None:
    health = Health()
    assert (await health.run()).reason == "starting"
    health.started = True
    assert (await health.run()).ready
    health.stopping = True
    report = await health.run()
    assert not report.ready
    assert report.reason == "shutting down"


def test_duplicate_or_nonsense_checks_are_refused() -> None:
    health = Health()
    health.add("db", ok)
    with pytest.raises(ValueError, match="already registered"):
        health.add("db", ok)
    with pytest.raises(ValueError, match="timeout must be positive"):
        health.add("x", ok, timeout=0)


async def test_ready_endpoint_answers_503_naming_the_failing_check() -> None:
    app = create_app("orders", settings=ServiceSettings(), checks={"database": broken, "cache": ok})
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        live = await http.get("/health/live")
        ready = await http.get("/health/ready")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "fail"
    failing = [c for c in body["checks"] if c["status"] != "ok"]
    assert failing == [
        {
            "name": "database",
            "status": "fail",
            "latency_ms": failing[0]["latency_ms"],
            "critical": True,
            "error": "ConnectionRefusedError: db down",
        }
    ]
    assert isinstance(failing[0]["latency_ms"], float)


async def test_ready_endpoint_answers_200_when_healthy() -> None:
    app = create_app("orders", settings=ServiceSettings(), checks={"cache": ok})
    async with serve(app) as url, httpx.AsyncClient(base_url=url) as http:
        ready = await http.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"][0]["name"] == "cache"
