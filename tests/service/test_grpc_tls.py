"""The gRPC port over TLS with the kit's TLS settings: the HTTPS certificate, client certificates
required (mTLS) and read by a handler, the kit's client calling grpcs:// peers with its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_helpers import ledger
from kittest.v1 import ledger_pb2, ledger_pb2_grpc
from upstream_tls_helpers import Pki, make_pki

from edgeway.service import ServiceSettings, create_app
from edgeway.service.app import kit_of
from edgeway.service.errors import PeerUnavailableError

GATEWAY = (("x-edgeway-subject", "edge"),)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def credentials(pki: Pki, *, with_cert: bool = False) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_file.read_bytes(),
        private_key=pki.client_key_file.read_bytes() if with_cert else None,
        certificate_chain=pki.client_cert_file.read_bytes() if with_cert else None,
    )


async def test_the_grpc_port_serves_tls_only_with_the_services_certificate(tmp_path: Path, pki: Pki) -> None:
    async with ledger(
        tmp_path, tls_cert=pki.cert_file, tls_key=pki.key_file, trust_gateway_headers=True
    ) as svc:
        async with grpc.aio.secure_channel(svc.target, credentials(pki)) as channel:
            reply = await ledger_pb2_grpc.LedgerStub(channel).Whoami(
                ledger_pb2.WhoamiRequest(), metadata=GATEWAY
            )
        async with grpc.aio.insecure_channel(svc.target) as plain:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ledger_pb2_grpc.LedgerStub(plain).Whoami(
                    ledger_pb2.WhoamiRequest(), metadata=GATEWAY, timeout=2
                )
        untrusting = grpc.ssl_channel_credentials(root_certificates=pki.other_ca_file.read_bytes())
        async with grpc.aio.secure_channel(svc.target, untrusting) as stranger:
            with pytest.raises(grpc.aio.AioRpcError) as unverified:
                await ledger_pb2_grpc.LedgerStub(stranger).Whoami(
                    ledger_pb2.WhoamiRequest(), metadata=GATEWAY, timeout=2
                )
    assert reply.subject == "edge"
    assert reply.client_cert == ""  # TLS without client certificates
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert unverified.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_mtls_refuses_a_client_without_a_certificate_and_names_the_one_that_has_one(
    tmp_path: Path, pki: Pki
) -> None:
    settings: dict[str, Any] = {
        "tls_cert": pki.cert_file,
        "tls_key": pki.key_file,
        "tls_client_ca": pki.ca_file,
        "tls_client_cert_required": True,
        "trust_gateway_headers": True,
    }
    async with ledger(tmp_path, **settings) as svc:
        async with grpc.aio.secure_channel(svc.target, credentials(pki)) as anonymous:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ledger_pb2_grpc.LedgerStub(anonymous).Whoami(
                    ledger_pb2.WhoamiRequest(), metadata=GATEWAY, timeout=2
                )
        async with grpc.aio.secure_channel(svc.target, credentials(pki, with_cert=True)) as channel:
            reply = await ledger_pb2_grpc.LedgerStub(channel).Whoami(
                ledger_pb2.WhoamiRequest(), metadata=GATEWAY
            )
        # the kit's own client, with the kit's TLS settings, to a grpcs:// peer
        caller = create_app(
            "caller",
            settings=ServiceSettings(
                grpc_services={"ledger": [f"grpcs://localhost:{svc.target.rsplit(':', 1)[1]}"]},
                tls_ca=pki.ca_file,
                tls_client_cert=pki.client_cert_file,
                tls_client_key=pki.client_key_file,
            ),
            configure_logging=False,
        )
        kit = kit_of(caller)
        via_kit = await kit.grpc_client("ledger", ledger_pb2_grpc.LedgerStub).Whoami(
            ledger_pb2.WhoamiRequest(), metadata=GATEWAY
        )
        without = create_app(
            "stranger",
            settings=ServiceSettings(grpc_services={"ledger": [f"grpcs://{svc.target}"]}, tls_ca=pki.ca_file),
            configure_logging=False,
        )
        with pytest.raises(PeerUnavailableError):
            await (
                kit_of(without)
                .grpc_client("ledger", ledger_pb2_grpc.LedgerStub)
                .Whoami(ledger_pb2.WhoamiRequest(), metadata=GATEWAY)
            )
        await kit.close()
        await kit_of(without).close()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert reply.client_cert.startswith("CN=edge-gateway,")
    assert via_kit.client_cert.startswith("CN=edge-gateway,")
