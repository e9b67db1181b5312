"""A kit service serving gRPC beside HTTP, on real sockets: the same request id, trace, identity,
deadline, error, log and metric behaviour as the HTTP side, health on readiness, reflection."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from grpc_helpers import health_check, health_watch, identity_settings, issuer, ledger
from grpc_reflection.v1alpha import reflection_pb2
from kittest.v1 import ledger_pb2, ledger_pb2_grpc
from sqlalchemy import func, select

from edgeway.service import ServiceSettings, create_app
from edgeway.service.app import kit_of
from edgeway.service.errors import SettingsError
from edgeway.service.grpc import GrpcServiceError

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """What a ``grpc-status-details-bin`` trailer says: reason, request id, field violations."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes), "no rich status details"
    status = status_pb2.Status.FromString(raw)
    found: dict[str, Any] = {"code": status.code, "message": status.message}
    for packed in status.details:
        info, request, bad = (
            error_details_pb2.ErrorInfo(),
            error_details_pb2.RequestInfo(),
            error_details_pb2.BadRequest(),
        )
        if packed.Unpack(info):
            found["reason"], found["metadata"] = info.reason, dict(info.metadata)
        elif packed.Unpack(request):
            found["request_id"] = request.request_id
        elif packed.Unpack(bad):
            found["violations"] = [(v.field, v.description) for v in bad.field_violations]
    return found


async def test_grpc_is_served_beside_http_carrying_request_id_and_trace_in_and_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgeway.access")
    async with ledger(tmp_path, trust_gateway_headers=True) as svc:
        async with httpx.AsyncClient() as http:
            assert (await http.get(svc.url + "/health/ready")).status_code == 200
        async with grpc.aio.insecure_channel(svc.target) as channel:
            call = ledger_pb2_grpc.LedgerStub(channel).Whoami(
                ledger_pb2.WhoamiRequest(),
                metadata=(
                    ("x-edgeway-subject", "u1"),
                    ("x-request-id", "req-0123456789ab"),
                    ("traceparent", TRACEPARENT),
                ),
            )
            reply = await call
            trailing = dict(await call.trailing_metadata())
            # a malformed request id is replaced, as over HTTP
            second = ledger_pb2_grpc.LedgerStub(channel).Whoami(
                ledger_pb2.WhoamiRequest(),
                metadata=(("x-edgeway-subject", "u1"), ("x-request-id", "bad id {}")),
            )
            minted = await second
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(svc.url + "/metrics")).text
    assert reply.request_id == "req-0123456789ab" == trailing["x-request-id"]
    assert reply.trace_id == TRACE_ID  # the handler's log context continues the caller's trace
    assert str(trailing["traceparent"]).startswith(f"00-{TRACE_ID}-")
    assert trailing["traceparent"] != TRACEPARENT  # this hop's own span
    assert minted.request_id
    assert minted.request_id != "bad id {}"
    assert reply.deadline_left == -1.0  # no grpc-timeout: no deadline
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Whoami",grpc_service="kittest.v1.Ledger",'
        'grpc_type="unary"} 2.0' in metrics
    )
    assert 'grpc_server_handling_seconds_count{grpc_method="Whoami"' in metrics
    access = [
        r for r in caplog.records if getattr(r, "protocol", None) == "grpc" and r.levelno == logging.INFO
    ]
    line = next(r for r in access if getattr(r, "path", "") == "/kittest.v1.Ledger/Whoami")
    assert line.getMessage() == "grpc /kittest.v1.Ledger/Whoami OK"
    assert (line.kind, line.status, line.grpc_code, line.client) == ("access", 200, "OK", "127.0.0.1")  # type: ignore[attr-defined]
    assert line.duration_ms >= 0  # type: ignore[attr-defined]


async def test_identity_follows_the_http_rules(tmp_path: Path) -> None:
    async with (
        issuer() as found,
        ledger(tmp_path, **identity_settings(found)) as svc,
        grpc.aio.insecure_channel(svc.target) as channel,
    ):
        stub = ledger_pb2_grpc.LedgerStub(channel)
        token = found.token("user-7", roles=["support"])
        bearer = (("authorization", f"Bearer {token}"),)
        verified = await stub.Whoami(ledger_pb2.WhoamiRequest(), metadata=bearer)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.Whoami(ledger_pb2.WhoamiRequest())
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await stub.Whoami(ledger_pb2.WhoamiRequest(), metadata=(("authorization", f"Bearer x{token}"),))
        with pytest.raises(grpc.aio.AioRpcError) as untrusted:  # gateway headers, not trusted here
            await stub.Whoami(ledger_pb2.WhoamiRequest(), metadata=(("x-edgeway-subject", "admin"),))
        with pytest.raises(grpc.aio.AioRpcError) as mismatch:  # a token and a forwarded subject disagree
            await stub.Whoami(ledger_pb2.WhoamiRequest(), metadata=(*bearer, ("x-edgeway-subject", "admin")))
    assert (verified.subject, list(verified.roles), verified.source) == ("user-7", ["support"], "token")
    for refused in (missing, forged, untrusted, mismatch):
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert details(missing.value)["reason"] == "MISSING"
    assert details(mismatch.value)["reason"] == "SUBJECT_MISMATCH"
    assert details(forged.value)["reason"] != "MISSING"
    assert details(missing.value)["request_id"] == dict(missing.value.trailing_metadata())["x-request-id"]


async def test_gateway_headers_are_taken_only_where_the_service_trusts_them(tmp_path: Path) -> None:
    async with (
        ledger(tmp_path, trust_gateway_headers=True) as svc,
        grpc.aio.insecure_channel(svc.target) as channel,
    ):
        reply = await ledger_pb2_grpc.LedgerStub(channel).Whoami(
            ledger_pb2.WhoamiRequest(),
            metadata=(("x-edgeway-subject", "user-9"), ("x-edgeway-roles", "admin, support")),
        )
    assert (reply.subject, list(reply.roles), reply.source) == ("user-9", ["admin", "support"], "gateway")


async def test_the_callers_deadline_cancels_the_handler_mid_call(tmp_path: Path) -> None:
    async with ledger(tmp_path, trust_gateway_headers=True) as svc:
        async with grpc.aio.insecure_channel(svc.target) as channel:
            stub = ledger_pb2_grpc.LedgerStub(channel)
            budget = await stub.Whoami(
                ledger_pb2.WhoamiRequest(), metadata=(("x-edgeway-subject", "u"),), timeout=2.5
            )
            with pytest.raises(grpc.aio.AioRpcError) as expired:
                await stub.Wait(ledger_pb2.WaitRequest(millis=5000), timeout=0.2)
            await _until(lambda: "cancelled" in svc.ledger.seen)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(svc.url + "/metrics")).text
    # grpc-timeout became the kit's deadline; grpc rounds the value it sends up to its unit, so
    # the server may see a few milliseconds more than the 2.5 s the caller gave
    assert 0 < budget.deadline_left <= 2.55
    assert expired.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    assert svc.ledger.seen == ["waiting", "cancelled"]  # the handler stopped, not finished
    assert 'grpc_code="DEADLINE_EXCEEDED",grpc_method="Wait"' in metrics


async def test_a_call_the_client_cancels_is_cancelled_in_the_service(tmp_path: Path) -> None:
    async with ledger(tmp_path) as svc:
        async with grpc.aio.insecure_channel(svc.target) as channel:
            call = ledger_pb2_grpc.LedgerStub(channel).Wait(ledger_pb2.WaitRequest(millis=5000))
            await _until(lambda: "waiting" in svc.ledger.seen)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await _until(lambda: "cancelled" in svc.ledger.seen)
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(svc.url + "/metrics")).text
    assert 'grpc_code="CANCELLED",grpc_method="Wait"' in metrics


async def _until(condition: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


async def _rows(svc: Any) -> int:
    async with svc.app.state.service.db.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(_entries()))).scalar_one())


def _entries() -> Any:
    from grpc_ledger import entries

    return entries


async def test_a_request_that_is_not_the_methods_message_is_refused_nothing_written(
    tmp_path: Path,
) -> None:
    async with ledger(tmp_path) as svc, grpc.aio.insecure_channel(svc.target) as channel:
        record: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/kittest.v1.Ledger/Record"
        )  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as corrupt:
            await record(b"\x0a\xff\xff\xff")
        # a stream whose third message does not parse: the two before it are rolled back
        stream: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(
            "/kittest.v1.Ledger/Import"
        )
        good = ledger_pb2.Entry(account="a", amount=1).SerializeToString()
        with pytest.raises(grpc.aio.AioRpcError) as half:
            await stream(iter([good, good, b"\x12\xff"]))
        imported = await ledger_pb2_grpc.LedgerStub(channel).Import(
            iter([ledger_pb2.Entry(account="b", amount=2), ledger_pb2.Entry(account="b", amount=3)])
        )
        assert await _rows(svc) == 2  # only the import that was whole
    assert corrupt.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid message" in (corrupt.value.details() or "")
    assert details(corrupt.value)["reason"] == "MALFORMED_MESSAGE"
    assert half.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert imported.count == 2


async def test_errors_become_status_codes_with_details_and_nothing_of_the_internals(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with ledger(tmp_path) as svc, grpc.aio.insecure_channel(svc.target) as channel:
        stub = ledger_pb2_grpc.LedgerStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await stub.Balance(ledger_pb2.BalanceRequest(account="missing"))
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Record(ledger_pb2.Entry(account=""))
        with pytest.raises(grpc.aio.AioRpcError) as internal:
            await stub.Record(ledger_pb2.Entry(account="explode"))
    assert not_found.value.code() is grpc.StatusCode.NOT_FOUND
    assert details(not_found.value)["metadata"] == {"type": "https://kittest/no-account"}
    assert invalid.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert details(invalid.value)["violations"] == [("account", "required")]
    assert internal.value.code() is grpc.StatusCode.INTERNAL
    assert "hunter2" not in str(internal.value.details()) + str(details(internal.value))
    request_id = details(internal.value)["request_id"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert logged
    assert "hunter2" in str(logged[0].exc_info[1])  # type: ignore[index]
    assert request_id


async def test_health_checking_follows_readiness(tmp_path: Path) -> None:
    async with ledger(tmp_path) as svc:
        kit = kit_of(svc.app)
        broken = False

        async def database_reachable() -> bool:
            return not broken

        kit.health.add("fake-dependency", database_reachable)
        async with grpc.aio.insecure_channel(svc.target) as channel:
            check = health_check(channel)
            ready = await check(health_pb2.HealthCheckRequest(service="kittest.v1.Ledger"))
            whole = await check(health_pb2.HealthCheckRequest())
            watch = health_watch(channel)(health_pb2.HealthCheckRequest())
            first = await watch.read()
            broken = True
            second = await watch.read()  # the change, pushed
            failing = await check(health_pb2.HealthCheckRequest())
            broken = False
            kit.health.stopping = True  # shutdown has begun
            stopping = await check(health_pb2.HealthCheckRequest())
            async with asyncio.timeout(5):
                rest = await watch.read()  # the watch ends once shutdown began
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            kit.health.stopping = False
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert (ready.status, whole.status) == (serving, serving)
    assert isinstance(first, health_pb2.HealthCheckResponse)
    assert first.status == serving
    assert isinstance(second, health_pb2.HealthCheckResponse)
    assert second.status == not_serving
    assert (failing.status, stopping.status) == (not_serving, not_serving)
    assert rest is grpc.aio.EOF  # NOT_SERVING had been said already
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_services(tmp_path: Path) -> None:
    async with ledger(tmp_path) as svc, grpc.aio.insecure_channel(svc.target) as channel:
        info: grpc.aio.StreamStreamMultiCallable[
            reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
        ] = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = info(
            iter(
                [
                    reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="kittest.v1.Ledger"),
                ]
            )
        )
        listed, described = [answer async for answer in answers]
    names = {s.name for s in listed.list_services_response.service}
    assert {"kittest.v1.Ledger", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # enough for grpcurl to call it


def test_a_grpc_port_that_is_the_http_port_or_an_address_that_is_not_grpc_is_refused() -> None:
    with pytest.raises(SettingsError, match="grpc_port 8000 is the HTTP port too"):
        ServiceSettings.load(port=8000, grpc_port=8000)
    with pytest.raises(SettingsError, match="not a gRPC address: write grpc://host:port"):
        ServiceSettings.load(grpc_services={"inventory": ["http://inventory:8000"]})


def test_a_servicer_must_be_generated_code_with_async_methods() -> None:
    class Blocking(ledger_pb2_grpc.LedgerServicer):
        def Balance(self, request: Any, context: Any) -> Any:
            return ledger_pb2.BalanceReply()

    settings = ServiceSettings(grpc_port=1234)
    with pytest.raises(GrpcServiceError, match=r"Blocking.Balance must be `async def`"):
        create_app("ledger", settings=settings, grpc=[Blocking()])  # type: ignore[abstract]
    with pytest.raises(GrpcServiceError, match="is not a gRPC servicer"):
        create_app("ledger", settings=settings, grpc=[object()])
