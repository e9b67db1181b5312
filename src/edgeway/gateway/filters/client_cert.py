"""Client certificates at the edge: the ``client_cert`` filter, on every route of a gateway whose
listener asks for them (``listen.tls.client_certificates``); a gateway without mutual TLS has no
such filter at all.

On every request it removes the ``X-Edgeway-Client-Cert-*`` headers a client sent itself, then,
when the connection presented a certificate (verified in the handshake), passes it on as those
headers (:mod:`edgeway.gateway.tls.peer`) and, when no token named the caller, makes it the
request's identity (its subject; what rate limits by ``user``, the cache key and composed calls
see). A route's ``client_cert`` rule may require a certificate and restrict which ones (403,
``reason`` ``client_cert_missing`` or ``client_cert_denied``).

It runs right after ``auth``, so a token's identity comes first and the auth filter's scrub of
``X-Edgeway-*`` cannot remove what this filter adds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from edgeway.gateway.config.schema import Route
from edgeway.gateway.core.errors import Rejection
from edgeway.gateway.core.pipeline import ADMIT, GatewayEnv, RequestContext, Verdict
from edgeway.gateway.filters.auth.identity_headers import HeaderScrubber
from edgeway.gateway.filters.client_cert_config import ClientCertRule

if TYPE_CHECKING:
    from edgeway.gateway.tls.peer import PeerCertificate
    from edgeway.http.server_tls import TlsInfo

__all__ = ["ClientCertFilter", "build_client_cert"]


def build_client_cert(route: Route, env: GatewayEnv) -> ClientCertFilter | None:
    tls = env.config.listen.tls
    if tls is None or tls.client_certificates is None:
        return None  # a route's `client_cert` without them is refused by config validation
    # Imported for a gateway with mutual TLS only: it parses certificates with cryptography.
    from edgeway.gateway.tls.peer import CLIENT_CERT_HEADER_PREFIX, peer_certificate

    return ClientCertFilter(
        route.client_cert, HeaderScrubber([CLIENT_CERT_HEADER_PREFIX], ()), peer_certificate
    )


class ClientCertFilter:
    __slots__ = ("_names", "_peer", "_scrub", "_subjects", "required")

    def __init__(
        self,
        rule: ClientCertRule | None,
        scrub: HeaderScrubber,
        peer: Callable[[TlsInfo], PeerCertificate | None],
    ) -> None:
        self._scrub = scrub
        self._peer = peer
        self.required = rule is not None and rule.required
        self._subjects = frozenset(rule.subjects) if rule is not None and rule.subjects else None
        self._names = frozenset(rule.names) if rule is not None and rule.names else None

    def on_request(self, ctx: RequestContext) -> Verdict:
        ex = ctx.ex
        headers = self._scrub(ex.headers)
        tls = ex.tls()
        peer = self._peer(tls) if tls is not None else None
        if peer is None:
            if self.required:
                raise Rejection(
                    403,
                    "Forbidden",
                    "this route needs a client certificate (mutual TLS)",
                    reason="client_cert_missing",
                )
            ex.headers = headers
            return ADMIT
        cert = peer.certificate
        if (self._subjects is not None or self._names is not None) and not (
            (self._subjects is not None and cert.subject in self._subjects)
            or (self._names is not None and not self._names.isdisjoint(cert.san_values))
        ):
            raise Rejection(
                403,
                "Forbidden",
                f"the client certificate {cert.subject!r} may not call this route",
                reason="client_cert_denied",
            )
        headers.extend(peer.headers)  # the exchange owns its header list: extending is safe
        ex.headers = headers
        if ctx.identity is None:
            ctx.identity = peer.identity
        ex.log["client_cert"] = cert.subject
        return ADMIT
