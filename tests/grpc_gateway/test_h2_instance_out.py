"""gRPC calls in flight on an instance that leaves the service, with real grpcio server
processes: one stopped (SIGSTOP: its sockets stay open, nothing answers) and found down by its
health check, or removed from the service, fails its calls in flight long before their timeout,
and new calls go to the instance that still answers; a removed instance that still answers
finishes its calls."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from grpc_callers import GrpcioCaller, Outcome
from kittest.v1 import ledger_pb2

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.h2_pool import H2Pool
from edgeway.http.listener import Listener, bind_socket

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
LEDGER = "/kittest.v1.Ledger"
UNAVAILABLE = int(grpc.StatusCode.UNAVAILABLE.value[0])


class Instance:
    """A grpcio ledger server process."""

    def __init__(self, name: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "tests" / "service"), str(HERE), env.get("PYTHONPATH", "")]
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "grpc_process.py"), name], stdout=subprocess.PIPE, env=env
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGSTOP, and wait until every thread has stopped: a thread of grpcio's still running
        when the signal was sent can answer a PING in the meantime (seen on a loaded machine)."""
        self.proc.send_signal(signal.SIGSTOP)
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            states = [(task / "stat").read_text().rsplit(")", 1)[1].split()[0] for task in tasks.iterdir()]
            if all(state in ("T", "t") for state in states):
                return
            time.sleep(0.001)
        raise AssertionError(f"instance {self.proc.pid} did not stop: {states}")

    def end(self) -> None:
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


@contextlib.asynccontextmanager
async def instances(*names: str) -> AsyncIterator[list[Instance]]:
    started = [Instance(name) for name in names]
    try:
        yield started
    finally:
        for instance in started:
            instance.end()


@contextlib.asynccontextmanager
async def gateway(urls: list[str], **service: Any) -> AsyncIterator[tuple[Gateway, GrpcioCaller]]:
    cfg = {
        "name": "grpc-gw",
        "listen": {"http2": True},
        "services": {
            "ledger": {
                "instances": urls,
                "protocol": "h2",
                "balancer": "round_robin",
                "timeouts": {"total": "30s"},
                **service,
            }
        },
        "routes": [{"id": "ledger", "match": {"path": f"{LEDGER}/**"}, "proxy": {"service": "ledger"}}],
    }
    gw = Gateway(validate_config(cfg), AccessLog("grpc-gw", io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits, http2=gw.http2)
    await listener.start(bind_socket("127.0.0.1", 0))
    caller = GrpcioCaller(f"127.0.0.1:{listener.port}")
    try:
        yield gw, caller
    finally:
        await caller.close()
        await listener.shutdown(1.0)
        await gw.stop()


def pool_states(pools: list[H2Pool]) -> list[str]:
    """What each instance's HTTP/2 connections hold, for a failure's message."""
    return [f"{pool}: {[repr(conn) for conn in pool.connections]}" for pool in pools]


def wait(millis: int) -> bytes:
    return ledger_pb2.WaitRequest(millis=millis).SerializeToString()


async def whoami(caller: GrpcioCaller) -> str:
    outcome = await caller.call(f"{LEDGER}/Whoami", b"", timeout=5)
    assert outcome.code == 0, outcome
    return ledger_pb2.WhoamiReply.FromString(outcome.replies[0]).instance


async def timed(call: asyncio.Task[Outcome]) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = await asyncio.wait_for(call, 20)
    return outcome, time.monotonic() - started


async def calls_on_each(caller: GrpcioCaller, millis: int) -> dict[str, asyncio.Task[Outcome]]:
    """A Wait call in flight on each of two instances (round robin), by the instance it is on."""
    first = asyncio.ensure_future(caller.call(f"{LEDGER}/Wait", wait(millis), timeout=25))
    second = asyncio.ensure_future(caller.call(f"{LEDGER}/Wait", wait(millis), timeout=25))
    await asyncio.sleep(0.3)  # both reached their instance
    return {"a": first, "b": second}


async def test_calls_on_an_instance_found_down_by_its_health_check_fail_at_once() -> None:
    check = {"kind": "grpc", "interval": 0.2, "timeout": 0.2, "unhealthy_threshold": 2}
    async with instances("a", "b") as (a, b), gateway([a.url, b.url], health_check=check) as (_, caller):
        assert {await whoami(caller), await whoami(caller)} == {"a", "b"}
        calls = await calls_on_each(caller, 3000)
        a.stop()
        # Which instance took which call is round robin's: the one that failed was on "a".
        outcomes = {name: await timed(call) for name, call in calls.items()}
        failed = [o for o, took in outcomes.values() if o.code != 0]
        served = [o for o, took in outcomes.values() if o.code == 0]
        assert len(failed) == 1, outcomes
        assert len(served) == 1, outcomes
        failed_took = next(took for o, took in outcomes.values() if o.code != 0)
        assert failed[0].code == UNAVAILABLE, failed
        assert "marked down by its health check" in failed[0].message
        # Two failed checks of 0.2 s (slower on a loaded machine), not the call's 30 s timeout.
        assert failed_took < 10, failed_took
        assert ledger_pb2.WaitReply.FromString(served[0].replies[0]).instance == "b"
        for _ in range(4):
            assert await whoami(caller) == "b"


async def test_calls_on_a_removed_instance_that_stopped_answering_fail_within_the_ping_timeout() -> None:
    keepalive = {"interval": "60s", "timeout": "0.5s"}  # no keepalive PING in this test's time
    async with instances("a", "b") as (a, b), gateway([a.url, b.url], keepalive=keepalive) as (gw, caller):
        assert {await whoami(caller), await whoami(caller)} == {"a", "b"}
        calls = await calls_on_each(caller, 3000)
        a.stop()
        started = time.monotonic()
        cluster = gw.clusters["ledger"]
        pools = [ep.h2 for ep in cluster.endpoints if ep.h2 is not None]
        before = pool_states(pools)
        cluster.update([b.url])  # what discovery does when "a" leaves
        _, pending = await asyncio.wait(calls.values(), timeout=20)
        assert not pending, (before, pool_states(pools))
        outcomes = [call.result() for call in calls.values()]
        failed = [o for o in outcomes if o.code != 0]
        assert len(failed) == 1, outcomes
        assert failed[0].code == UNAVAILABLE, failed
        assert "did not answer a PING" in failed[0].message
        served = [o for o in outcomes if o.code == 0]
        assert ledger_pb2.WaitReply.FromString(served[0].replies[0]).instance == "b"
        # b's call takes 3 s, a's failed after the 0.5 s ping timeout: far from the 30 s timeout.
        assert time.monotonic() - started < 10
        for _ in range(4):
            assert await whoami(caller) == "b"


async def test_a_removed_instance_that_still_answers_finishes_its_calls() -> None:
    keepalive = {"interval": "60s", "timeout": "0.5s"}
    async with instances("a", "b") as (a, b), gateway([a.url, b.url], keepalive=keepalive) as (gw, caller):
        assert {await whoami(caller), await whoami(caller)} == {"a", "b"}
        calls = await calls_on_each(caller, 1500)
        gw.clusters["ledger"].update([b.url])
        outcomes = [await asyncio.wait_for(call, 20) for call in calls.values()]
        assert [o.code for o in outcomes] == [0, 0], outcomes
        instances_seen = {ledger_pb2.WaitReply.FromString(o.replies[0]).instance for o in outcomes}
        assert instances_seen == {"a", "b"}
        for _ in range(4):
            assert await whoami(caller) == "b"
