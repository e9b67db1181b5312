"""The gRPC call being served: its metadata, its caller, its client certificate.

The server's interceptor (:mod:`edgeway.service.grpc.interceptors`) binds a :class:`GrpcCall`
for the handler's task; a handler reads it through these functions, the way an HTTP endpoint
declares ``Caller`` or ``ClientCertificate``::

    class Orders(orders_pb2_grpc.OrdersServicer):
        async def Cancel(self, request, context):
            who = await caller(roles=["support"])     # UNAUTHENTICATED / PERMISSION_DENIED
            ...

Identity follows the HTTP rules exactly (:func:`edgeway.service.identity.identify`): a bearer
token in the ``authorization`` metadata is verified locally (JWKS, revocations); without one, the
gateway's ``x-edgeway-subject``/``-roles``/``-scopes``/``-claims`` metadata is taken only when the
service trusts gateway headers (``trust_gateway_headers``); otherwise the call is refused. It is
computed when first asked for, as on the HTTP side, so a method that never asks needs no token.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

from edgeway.service.errors import PermissionDeniedError
from edgeway.service.identity import Identity, IdentityConfig, identify
from edgeway.service.tls import PeerCertificate, parse_certificate

__all__ = ["GrpcCall", "caller", "current_call", "peer_certificate"]


@dataclass(slots=True)
class GrpcCall:
    """One call being served."""

    method: str  # "/shop.inventory.v1.Inventory/Reserve"
    metadata: dict[str, str]  # text metadata, lower-case keys (binary "-bin" entries left out)
    request_id: str
    context: grpc.aio.ServicerContext[Any, Any]
    identity_config: IdentityConfig | None = None
    _identity: Identity | None = field(default=None, repr=False)

    async def identity(self) -> Identity:
        """The verified caller (computed once per call): see the module docstring."""
        if self._identity is None:
            self._identity = await identify(
                self.identity_config, self.metadata.get("authorization"), self.metadata
            )
        return self._identity


_current: ContextVar[GrpcCall | None] = ContextVar("edgeway_grpc_call", default=None)


def current_call() -> GrpcCall:
    """The call the running handler serves; a RuntimeError outside one."""
    call = _current.get()
    if call is None:
        raise RuntimeError(
            "no gRPC call is being served here: call this from a servicer method of a kit service"
        )
    return call


async def caller(*, roles: Iterable[str] = (), scopes: Iterable[str] = ()) -> Identity:
    """The verified caller of the current call, holding every one of ``roles`` and ``scopes``.

    No credentials or a bad token: :class:`~edgeway.service.errors.AuthenticationError`, answered
    ``UNAUTHENTICATED``; a role or scope missing: :class:`~edgeway.service.errors.
    PermissionDeniedError`, answered ``PERMISSION_DENIED``."""
    identity = await current_call().identity()
    missing_roles = frozenset(roles) - identity.roles
    if missing_roles:
        raise PermissionDeniedError(f"missing role(s): {', '.join(sorted(missing_roles))}")
    missing_scopes = frozenset(scopes) - identity.scopes
    if missing_scopes:
        raise PermissionDeniedError(f"missing scope(s): {', '.join(sorted(missing_scopes))}")
    return identity


def peer_certificate(context: grpc.aio.ServicerContext[Any, Any] | None = None) -> PeerCertificate | None:
    """The verified client certificate of the current call (or of ``context``'s): None over a
    plain port or from a client that presented none. The gRPC port asks for one only when the
    service requires them (``tls_client_cert_required``): see docs/rpc.md."""
    ctx = context if context is not None else current_call().context
    pem = next(iter(ctx.auth_context().get("x509_pem_cert") or ()), None)
    if pem is None:
        return None
    return parse_certificate(pem.decode("ascii") if isinstance(pem, bytes) else str(pem))
