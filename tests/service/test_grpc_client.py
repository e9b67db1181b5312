"""The kit's typed gRPC client between real services: discovery and balancing, what a call carries
on (request id, trace, identity, the remaining deadline), errors, and instances that die (real
processes killed mid-stream: the breaker and the retries move the calls to the other one)."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from grpc_helpers import Process, identity_settings, issuer, ledger, ledger_processes, log_lines, wait_serving
from kittest.v1 import ledger_pb2, ledger_pb2_grpc
from opentelemetry import context as otel_context
from servers import serve

from conftest import require
from edgeway.observability.context import remote_context
from edgeway.observability.ids import TraceParent
from edgeway.observability.logs import request_context
from edgeway.resilience.breaker import BreakerPolicy, BreakerState
from edgeway.service import ServiceSettings, create_app
from edgeway.service.app import kit_of
from edgeway.service.deadline import deadline_scope
from edgeway.service.discovery import StaticDiscovery
from edgeway.service.errors import (
    CircuitOpenError,
    DeadlineExceededError,
    NoInstancesError,
    PeerUnavailableError,
)
from edgeway.service.grpc import GrpcChannel, PeerStatusError
from edgeway.service.middleware import incoming_authorization

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
NATS_URL = "nats://127.0.0.1:4222"


def caller_kit(**services: list[str]) -> ledger_pb2_grpc.LedgerAsyncStub:
    """A kit app (never served) whose gRPC client finds the ledger at ``services``."""
    app = create_app("caller", settings=ServiceSettings(grpc_services=services), configure_logging=False)
    return kit_of(app).grpc_client("ledger", ledger_pb2_grpc.LedgerStub)


async def test_the_typed_client_balances_over_discovered_instances(tmp_path: Path) -> None:
    async with (
        ledger(tmp_path, instance="a") as a,
        ledger(tmp_path, instance="b") as b,
    ):
        stub = caller_kit(ledger=[a.grpc_url, b.grpc_url])
        answers = [(await stub.Wait(ledger_pb2.WaitRequest(millis=0))).instance for _ in range(4)]
        receipt = await stub.Record(ledger_pb2.Entry(account="x", amount=3))
        with pytest.raises(PeerStatusError) as missing:
            await stub.Balance(ledger_pb2.BalanceRequest(account="missing"))
        ticks = [t.n async for t in stub.Ticks(ledger_pb2.TicksRequest(count=3))]
        imported = await stub.Import(iter([ledger_pb2.Entry(account="y", amount=1)] * 3))
    assert sorted(answers) == ["a", "a", "b", "b"]  # both instances, in turn
    assert receipt.count == 1
    assert missing.value.code is grpc.StatusCode.NOT_FOUND
    assert missing.value.status == 404  # as an HTTP peer's PeerResponseError would say
    assert missing.value.request_id  # the peer's, to quote
    assert missing.value.metadata == {"type": "https://kittest/no-account"}
    assert ticks == [0, 1, 2]
    assert imported.count == 3


async def test_a_call_carries_request_id_trace_identity_and_the_remaining_deadline(tmp_path: Path) -> None:
    async with issuer() as found, ledger(tmp_path, instance="back", **identity_settings(found)) as back:
        stub = caller_kit(ledger=[back.grpc_url])
        token = found.token("user-3")
        # the service's first token fetches its JWKS (seconds on a busy machine): not timed here
        await stub.Whoami(ledger_pb2.WhoamiRequest(), metadata=(("authorization", f"Bearer {token}"),))
        # inside a request the kit serves: its token, its span, its request id, its deadline
        authorization = incoming_authorization.set(f"Bearer {token}")
        span = otel_context.attach(remote_context(TraceParent(TRACE_ID.encode(), b"00f067aa0ba902b7", b"01")))
        try:
            with request_context("req-from-edge-1", TRACE_ID, "00f067aa0ba902b7"), deadline_scope(1.5):
                seen = await stub.Whoami(ledger_pb2.WhoamiRequest())
        finally:
            otel_context.detach(span)
            incoming_authorization.reset(authorization)
    assert (seen.subject, seen.source) == ("user-3", "token")  # the caller's token, verified there
    assert seen.request_id == "req-from-edge-1"
    assert seen.trace_id == TRACE_ID
    # what was left of the caller's deadline, as grpc-timeout (else the client's own 5 s)
    assert 0 < seen.deadline_left < 1.55


async def test_a_grpc_handler_calling_another_service_passes_its_call_on(tmp_path: Path) -> None:
    async with (
        issuer() as found,
        ledger(tmp_path, instance="back", **identity_settings(found)) as back,
        ledger(
            tmp_path,
            instance="front",
            grpc_services={"peer-ledger": [back.grpc_url]},
            **identity_settings(found),
        ) as front,
        grpc.aio.insecure_channel(front.target) as channel,
    ):
        bearer = ("authorization", f"Bearer {found.token('user-5')}")
        stub = ledger_pb2_grpc.LedgerStub(channel)
        await stub.Relay(ledger_pb2.WhoamiRequest(), metadata=(bearer,))  # the JWKS fetched, untimed
        relayed = await stub.Relay(
            ledger_pb2.WhoamiRequest(),
            metadata=(
                ("x-request-id", "req-relay-000001"),
                ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"),
                bearer,
            ),
            timeout=2.0,
        )
    assert relayed.instance == "back"
    assert (relayed.subject, relayed.source) == ("user-5", "token")  # the caller's token, passed on
    assert (relayed.request_id, relayed.trace_id) == ("req-relay-000001", TRACE_ID)
    assert 0 < relayed.deadline_left < 2.05  # grpc-timeout rounds up a little; not its own 5 s


async def test_no_instance_and_a_deadline_already_spent_are_the_kits_errors(tmp_path: Path) -> None:
    with pytest.raises(NoInstancesError, match="EDGEWAY_SERVICE_LEDGER_URLS"):
        await caller_kit().Balance(ledger_pb2.BalanceRequest(account="a"))
    async with ledger(tmp_path) as svc:
        stub = caller_kit(ledger=[svc.grpc_url])
        with deadline_scope(0.2), pytest.raises(DeadlineExceededError):
            await stub.Wait(ledger_pb2.WaitRequest(millis=3000))
        await asyncio.sleep(0.1)
    assert svc.ledger.seen[-1] == "cancelled"  # the deadline reached the service, which stopped


async def test_an_unreachable_instance_is_skipped_for_any_method_and_its_breaker_opens(
    tmp_path: Path,
) -> None:
    from conftest import dead_port

    dead = f"grpc://127.0.0.1:{dead_port()}"
    async with ledger(tmp_path, instance="alive") as alive:
        channel = GrpcChannel(
            "ledger",
            StaticDiscovery({"ledger": [dead, alive.grpc_url]}),
            breaker=BreakerPolicy(consecutive_failures=2, open_for=60),
        )
        stub = ledger_pb2_grpc.LedgerStub(channel)
        # Record is not safe to repeat: it may go elsewhere only because nothing was sent
        receipts = [await stub.Record(ledger_pb2.Entry(account="a", amount=1)) for _ in range(4)]
        breaker = channel.peers.breaker(dead)
        await channel.close()
        only_dead = GrpcChannel(
            "ledger", StaticDiscovery({"ledger": [dead]}), breaker=BreakerPolicy(consecutive_failures=1)
        )
        with pytest.raises(PeerUnavailableError, match="no instance could be reached"):
            await ledger_pb2_grpc.LedgerStub(only_dead).Balance(ledger_pb2.BalanceRequest(account="a"))
        with pytest.raises(CircuitOpenError):
            await ledger_pb2_grpc.LedgerStub(only_dead).Balance(ledger_pb2.BalanceRequest(account="a"))
        await only_dead.close()
    assert [r.count for r in receipts] == [1, 1, 1, 1]
    assert breaker.state is BreakerState.OPEN


def _kill(process: Process) -> None:
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait(timeout=10)


@pytest.mark.xdist_group("grpc-processes")
async def test_an_instance_killed_mid_stream_and_mid_call(tmp_path: Path) -> None:
    # a and c are processes of their own, killed with SIGKILL; b serves in this process
    with ledger_processes(tmp_path, 2) as (a, c):
        async with ledger(tmp_path, instance="b") as b:
            await asyncio.gather(wait_serving(a.target, a.proc), wait_serving(c.target, c.proc))
            channel = GrpcChannel(
                "ledger",
                StaticDiscovery({"ledger": [a.grpc_url, b.grpc_url]}),
                breaker=BreakerPolicy(consecutive_failures=1, open_for=60),
                connect_timeout=0.5,
            )
            stub = ledger_pb2_grpc.LedgerStub(channel)
            # A stream that has delivered messages cannot be replayed: killing its instance ends it.
            ticks = stub.Ticks(ledger_pb2.TicksRequest(count=100, interval_millis=20))  # to a, the first
            got: list[ledger_pb2.Tick] = []

            async def read_until_killed() -> None:
                async for tick in ticks:
                    got.append(tick)
                    if len(got) == 3:
                        _kill(a)

            with pytest.raises(PeerUnavailableError) as cut:
                await read_until_killed()
            # Every call after it goes to b: a's breaker opened at the cut.
            after = [(await stub.Wait(ledger_pb2.WaitRequest(millis=0))).instance for _ in range(4)]
            breaker = channel.peers.breaker(a.grpc_url)
            await channel.close()

            # An idempotent call in flight when its instance dies is retried on another one.
            channel = GrpcChannel(
                "ledger", StaticDiscovery({"ledger": [b.grpc_url, c.grpc_url]}), connect_timeout=0.5
            )
            stub = ledger_pb2_grpc.LedgerStub(channel)
            turns = [(await stub.Wait(ledger_pb2.WaitRequest(millis=0))).instance for _ in range(3)]
            waiting = asyncio.ensure_future(stub.Wait(ledger_pb2.WaitRequest(millis=1500)))  # to c
            await asyncio.sleep(0.3)
            _kill(c)
            answered = await waiting
            await channel.close()
        c_lines = log_lines(tmp_path, c.instance)
    assert [t.instance for t in got] == [a.instance] * 3
    assert "UNAVAILABLE" in str(cut.value)
    assert breaker.state is BreakerState.OPEN
    assert after == ["b"] * 4
    assert turns == ["b", c.instance, "b"]
    assert answered.instance == "b"  # c died with the call: b answered it
    # the call c answered before it died: one access line in the kit's JSON schema, on stdout
    waits = [line for line in c_lines if line.get("path") == "/kittest.v1.Ledger/Wait"]
    assert len(waits) == 1
    assert {"time", "level", "service", "request_id", "trace_id", "span_id", "message"} <= set(waits[0])
    assert (waits[0]["kind"], waits[0]["protocol"], waits[0]["grpc_code"]) == ("access", "grpc", "OK")


async def test_an_instance_registers_its_grpc_address_and_peers_find_it_in_the_registry(
    tmp_path: Path,
) -> None:
    require("nats")
    bucket = f"reg_{uuid.uuid4().hex[:12]}"
    registry_settings: dict[str, Any] = {"registry_bucket": bucket, "registry_ttl": 5, "nats_url": NATS_URL}
    try:
        async with ledger(tmp_path, advertise_url="http://127.0.0.1:9", **registry_settings) as svc:
            caller = create_app(
                "caller", settings=ServiceSettings(**registry_settings), configure_logging=False
            )
            async with serve(caller):
                stub = kit_of(caller).grpc_client("ledger", ledger_pb2_grpc.LedgerStub)
                await stub.Record(ledger_pb2.Entry(account="r", amount=2))
                balance = await stub.Balance(ledger_pb2.BalanceRequest(account="r"))
                registered = await kit_of(caller).grpc_discovery.resolve("ledger")
    finally:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().delete_key_value(bucket)
        await nc.close()
    assert registered == [svc.grpc_url]  # advertise_url's host, grpc_port
    assert balance.balance == 2


async def test_a_call_awaited_again_answers_the_same_without_calling_again(tmp_path: Path) -> None:
    async with ledger(tmp_path) as svc:
        stub = caller_kit(ledger=[svc.grpc_url])
        call = stub.Record(ledger_pb2.Entry(account="once", amount=1))
        first, again = await call, await call
        trailing = dict(await call.trailing_metadata())
        balance = await stub.Balance(ledger_pb2.BalanceRequest(account="once"))
    assert first == again
    assert balance.entries == 1  # recorded once
    assert trailing["x-request-id"]


async def test_an_instance_that_leaves_discovery_is_no_longer_called(tmp_path: Path) -> None:
    async with ledger(tmp_path, instance="a") as a, ledger(tmp_path, instance="b") as b:
        instances = {"ledger": [a.grpc_url, b.grpc_url]}
        channel = GrpcChannel("ledger", StaticDiscovery(instances))
        stub = ledger_pb2_grpc.LedgerStub(channel)
        before = {(await stub.Wait(ledger_pb2.WaitRequest())).instance for _ in range(2)}
        in_flight = asyncio.ensure_future(stub.Wait(ledger_pb2.WaitRequest(millis=300)))  # to a
        await asyncio.sleep(0.05)
        channel.discovery = StaticDiscovery({"ledger": [b.grpc_url]})
        after = {(await stub.Wait(ledger_pb2.WaitRequest())).instance for _ in range(3)}
        finished = await in_flight  # a's connection closed gracefully: the call in flight ended
        await channel.close()
    assert before == {"a", "b"}
    assert after == {"b"}
    assert finished.instance == "a"
