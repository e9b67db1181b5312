"""gRPC through the gateway, against a real grpcio server: calls, trailers, deadlines, and the
gateway's own refusals as gRPC statuses. Every case runs with a real grpcio client (HTTP/2 to
the gateway) and with a raw HTTP/1.1 request (the status in chunked trailers)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme
from grpc_backend import Backend, backend
from grpc_callers import Caller, GrpcioCaller, Http1Caller
from grpc_helpers import Issuer, issuer
from kittest.v1 import ledger_pb2, ledger_pb2_grpc

from edgeway.gateway.config import validate_config
from edgeway.gateway.core.access_log import AccessLog
from edgeway.gateway.core.runtime import Gateway
from edgeway.http.listener import Listener, bind_socket

LEDGER = "/kittest.v1.Ledger"
Code = grpc.StatusCode


def code(status: grpc.StatusCode) -> int:
    return int(status.value[0])


def ledger_config(backend: Backend | None, port: int | None = None, **service: Any) -> dict[str, Any]:
    target = backend.target if backend is not None else f"127.0.0.1:{port}"
    route: dict[str, Any] = {
        "id": "ledger",
        "match": {"path": f"{LEDGER}/**"},
        "proxy": {"service": "ledger"},
    }
    route.update(service.pop("route", {}))
    top = service.pop("top", {})
    return {
        "name": "grpc-gw",
        "listen": {"http2": True},
        "services": {"ledger": {"instances": [f"http://{target}"], "protocol": "h2", **service}},
        "routes": [route],
        **top,
    }


@pytest.fixture(params=["grpcio", "http1"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def gateway(cfg: dict[str, Any]) -> AsyncIterator[int]:
    """The gateway of ``cfg`` on a loopback port: HTTP/1.1, and h2c with prior knowledge."""
    gw = Gateway(validate_config(cfg), AccessLog("grpc-gw", io.BytesIO()))
    await gw.start()
    listener = Listener(gw, gw.limits, http2=gw.http2)
    await listener.start(bind_socket("127.0.0.1", 0))
    try:
        yield listener.port
    finally:
        await listener.shutdown(1.0)
        await gw.stop()


@contextlib.asynccontextmanager
async def through(cfg: dict[str, Any], transport: str) -> AsyncIterator[Caller]:
    async with gateway(cfg) as port:
        caller: Caller = GrpcioCaller(f"127.0.0.1:{port}") if transport == "grpcio" else Http1Caller(port)
        try:
            yield caller
        finally:
            await caller.close()


@pytest.fixture
async def ledger() -> AsyncIterator[Backend]:
    async with backend() as running:
        yield running


async def test_unary_call_and_its_trailers_pass_through(ledger: Backend, transport: str) -> None:
    async with through(ledger_config(ledger), transport) as caller:
        entry = ledger_pb2.Entry(account="acme", amount=7).SerializeToString()
        outcome = await caller.call(f"{LEDGER}/Record", entry)
        assert outcome.code == 0
        assert ledger_pb2.Receipt.FromString(outcome.replies[0]).count == 1
        balance = await caller.call(
            f"{LEDGER}/Balance", ledger_pb2.BalanceRequest(account="acme").SerializeToString()
        )
        assert ledger_pb2.BalanceReply.FromString(balance.replies[0]).balance == 7
        assert balance.trailers["x-ledger-instance"] == "ledger-1"  # the service's own trailer


async def test_server_streaming_call(ledger: Backend, transport: str) -> None:
    async with through(ledger_config(ledger), transport) as caller:
        request = ledger_pb2.TicksRequest(count=25, interval_millis=2).SerializeToString()
        outcome = await caller.call(f"{LEDGER}/Ticks", request)
        assert outcome.code == 0
        assert [ledger_pb2.Tick.FromString(r).n for r in outcome.replies] == list(range(25))


async def test_a_service_error_passes_through_with_its_message(ledger: Backend, transport: str) -> None:
    async with through(ledger_config(ledger), transport) as caller:
        outcome = await caller.call(f"{LEDGER}/Record", ledger_pb2.Entry(account="").SerializeToString())
        assert outcome.code == code(Code.INVALID_ARGUMENT)
        assert outcome.message == "an entry needs an account: caf\u00e9"


async def test_the_time_left_of_grpc_timeout_reaches_the_service(ledger: Backend, transport: str) -> None:
    async with through(ledger_config(ledger), transport) as caller:
        outcome = await caller.call(f"{LEDGER}/Whoami", b"", timeout=5.0)
        assert outcome.code == 0
        left = ledger_pb2.WhoamiReply.FromString(outcome.replies[0]).deadline_left
        assert 3.0 < left <= 5.0


async def test_grpc_timeout_expiry_is_deadline_exceeded_and_the_service_is_cancelled(
    ledger: Backend, transport: str
) -> None:
    async with through(ledger_config(ledger), transport) as caller:
        started = time.monotonic()
        outcome = await caller.call(
            f"{LEDGER}/Wait", ledger_pb2.WaitRequest(millis=3000).SerializeToString(), timeout=0.3
        )
        assert outcome.code == code(Code.DEADLINE_EXCEEDED)
        assert time.monotonic() - started < 2.0
        for _ in range(50):
            if "cancelled" in ledger.seen():
                break
            await asyncio.sleep(0.02)
        assert "cancelled" in ledger.seen()


async def test_the_services_total_timeout_is_deadline_exceeded(ledger: Backend, transport: str) -> None:
    cfg = ledger_config(ledger, timeouts={"total": 0.3})
    async with through(cfg, transport) as caller:
        outcome = await caller.call(f"{LEDGER}/Wait", ledger_pb2.WaitRequest(millis=3000).SerializeToString())
        assert outcome.code == code(Code.DEADLINE_EXCEEDED)
        assert outcome.http_status == 200  # a gRPC status, not an HTTP 504 page


async def test_no_route_is_unimplemented(ledger: Backend, transport: str) -> None:
    async with through(ledger_config(ledger), transport) as caller:
        outcome = await caller.call("/shop.v1.Orders/Get", b"")
        assert outcome.code == code(Code.UNIMPLEMENTED)
        assert outcome.http_status == 200


@pytest.fixture
async def tokens() -> AsyncIterator[Issuer]:
    async with issuer() as found:
        yield found


def auth_config(ledger: Backend, tokens: Issuer, **route: Any) -> dict[str, Any]:
    auth = {"jwks_url": tokens.jwks_url, "issuer": "https://security.test", "audience": "ledger-gw"}
    return ledger_config(ledger, route={"auth": {"mode": "required", **route}}, top={"auth": auth})


def token(tokens: Issuer, **claims: Any) -> str:
    return tokens.token(aud="ledger-gw", jti=uuid.uuid4().hex, **claims)


async def test_a_missing_token_is_unauthenticated(ledger: Backend, tokens: Issuer, transport: str) -> None:
    async with through(auth_config(ledger, tokens), transport) as caller:
        outcome = await caller.call(f"{LEDGER}/Whoami", b"")
        assert outcome.code == code(Code.UNAUTHENTICATED)
        assert outcome.http_status == 200
        good = await caller.call(
            f"{LEDGER}/Whoami", b"", metadata={"authorization": f"Bearer {token(tokens)}"}
        )
        assert good.code == 0
        assert ledger_pb2.WhoamiReply.FromString(good.replies[0]).subject.startswith("Bearer ")


async def test_spoofed_identity_and_forwarding_headers_never_reach_the_service(
    ledger: Backend, tokens: Issuer, transport: str
) -> None:
    """A client's own identity and forwarding headers, and their `_` spellings, are dropped on
    the gRPC path as on the HTTP/1.1 proxy; the service sees the gateway's lines only."""
    cfg = auth_config(ledger, tokens)
    spoofed = {
        "x-edgeway-subject": "admin",
        "x_edgeway_roles": "admin",
        "x_forwarded_for": "203.0.113.9",
        "forwarded": "for=203.0.113.9",
        "x-real-ip": "203.0.113.9",
        "authorization": f"Bearer {token(tokens, subject='alice')}",
    }
    async with through(cfg, transport) as caller:
        outcome = await caller.call(f"{LEDGER}/Whoami", b"", metadata=spoofed)
    assert outcome.code == 0
    seen = ledger.ledger.metadata[-1]
    assert seen.get("x-edgeway-subject") == "alice"
    for name in ("x_edgeway_roles", "x_forwarded_for", "forwarded", "x-real-ip"):
        assert name not in seen, name
    assert "203.0.113.9" not in seen.get("x-forwarded-for", "")


async def test_a_missing_role_is_permission_denied(ledger: Backend, tokens: Issuer, transport: str) -> None:
    async with through(auth_config(ledger, tokens, roles=["admin"]), transport) as caller:
        outcome = await caller.call(
            f"{LEDGER}/Whoami", b"", metadata={"authorization": f"Bearer {token(tokens)}"}
        )
        assert outcome.code == code(Code.PERMISSION_DENIED)


async def test_a_rate_limit_is_resource_exhausted(ledger: Backend, transport: str) -> None:
    cfg = ledger_config(ledger, route={"rate_limit": {"rate": 2, "per": 60}})
    async with through(cfg, transport) as caller:
        first = await caller.call(f"{LEDGER}/Whoami", b"")
        second = await caller.call(f"{LEDGER}/Whoami", b"")
        third = await caller.call(f"{LEDGER}/Whoami", b"")
        assert [first.code, second.code] == [0, 0]
        assert third.code == code(Code.RESOURCE_EXHAUSTED)


async def test_an_instance_that_is_down_is_unavailable(transport: str) -> None:
    async with backend() as stopped:
        port = stopped.port
    async with through(ledger_config(None, port), transport) as caller:
        outcome = await caller.call(f"{LEDGER}/Whoami", b"")
        assert outcome.code == code(Code.UNAVAILABLE)
        assert f"127.0.0.1:{port}" in outcome.message


async def test_a_not_serving_instance_is_taken_out_by_the_grpc_health_check(
    ledger: Backend, transport: str
) -> None:
    check = {"kind": "grpc", "grpc_service": "kittest.v1.Ledger", "interval": 0.1, "timeout": 0.1}
    check |= {"unhealthy_threshold": 1, "healthy_threshold": 1}
    # panic_threshold 0: the lone instance failing its check is taken out, not kept in by panic
    # (tests/resilience/test_panic_threshold.py has the panic side).
    cfg = ledger_config(ledger, health_check=check, panic_threshold=0)
    async with through(cfg, transport) as caller:
        assert (await caller.call(f"{LEDGER}/Whoami", b"")).code == 0
        await ledger.set_serving(False)
        outcome = None
        for _ in range(40):
            outcome = await caller.call(f"{LEDGER}/Whoami", b"")
            if outcome.code != 0:
                break
            await asyncio.sleep(0.05)
        assert outcome is not None
        assert outcome.code == code(Code.UNAVAILABLE)
        # refused before it went out, or (the check landing while the call was on the wire)
        # failed at once by it: docs/http2-grpc.md, calls on an instance taken out
        assert (
            "no available instance" in outcome.message or "marked down by its health check" in outcome.message
        ), outcome.message
        await ledger.set_serving(True)
        for _ in range(40):
            outcome = await caller.call(f"{LEDGER}/Whoami", b"")
            if outcome.code == 0:
                break
            await asyncio.sleep(0.05)
        assert outcome.code == 0


async def test_a_tls_instance_is_reached_over_h2_with_the_services_ca(tmp_path: Path, transport: str) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    tls = (leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    async with backend("ledger-tls", tls=tls) as secure:
        check = {"kind": "grpc", "interval": 1, "timeout": 1}
        cfg = ledger_config(None, tls={"ca": str(ca_file)}, health_check=check)
        cfg["services"]["ledger"]["instances"] = [f"https://{secure.target}"]
        async with through(cfg, transport) as caller:
            outcome = await caller.call(f"{LEDGER}/Whoami", b"")
            assert outcome.code == 0
            assert ledger_pb2.WhoamiReply.FromString(outcome.replies[0]).instance == "ledger-tls"


async def test_a_tls_instance_whose_certificate_is_not_trusted_is_unavailable(
    tmp_path: Path, transport: str
) -> None:
    leaf = trustme.CA().issue_cert("127.0.0.1")
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    tls = (leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    async with backend("ledger-tls", tls=tls) as secure:
        cfg = ledger_config(None, tls={"ca": str(other)})
        cfg["services"]["ledger"]["instances"] = [f"https://{secure.target}"]
        async with through(cfg, transport) as caller:
            outcome = await caller.call(f"{LEDGER}/Whoami", b"")
            assert outcome.code == code(Code.UNAVAILABLE)
            assert "certificate verify failed" in outcome.message


async def test_a_client_stream_of_many_messages_flows_through(ledger: Backend) -> None:
    # 2,000 entries of 3 kB: past every flow-control window on both of the gateway's sides.
    async with (
        gateway(ledger_config(ledger)) as port,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        stub = ledger_pb2_grpc.LedgerStub(channel)

        async def entries() -> AsyncIterator[ledger_pb2.Entry]:
            for n in range(2000):
                yield ledger_pb2.Entry(account=f"acct-{n % 7}" + "x" * 3000, amount=1)

        try:
            receipt = await stub.Import(entries(), timeout=30)
        finally:
            await channel.close()
        assert receipt.count == 2000
        assert sum(ledger.ledger.balances.values()) == 2000


async def test_an_instance_answering_unavailable_is_ejected_like_one_answering_503(
    ledger: Backend, transport: str
) -> None:
    # Every gRPC answer is HTTP 200: the guard judges a call by its grpc-status.
    ejection = {"consecutive_failures": 2, "base_ejection_time": 30}
    async with backend("ledger-2") as second:
        cfg = ledger_config(ledger, outlier_ejection=ejection)
        cfg["services"]["ledger"]["instances"].append(f"http://{second.target}")
        async with through(cfg, transport) as caller:
            entry = ledger_pb2.Entry(account="unavailable-ledger-1").SerializeToString()
            codes = [(await caller.call(f"{LEDGER}/Record", entry)).code for _ in range(4)]
            assert codes.count(code(Code.UNAVAILABLE)) == 2  # ledger-1's own, twice: then out
            who = [await caller.call(f"{LEDGER}/Whoami", b"") for _ in range(6)]
            assert {ledger_pb2.WhoamiReply.FromString(o.replies[0]).instance for o in who} == {"ledger-2"}
