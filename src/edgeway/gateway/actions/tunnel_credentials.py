"""Proxied WebSocket tunnels end with the credentials that opened them.

A proxy route with ``websocket: true`` checks the caller's token once, at the handshake; the
tunnel that follows can last hours. Without this, a logout (the token's ``jti`` revoked) or the
token's ``exp`` would end the caller's HTTP requests but not the socket they already hold. The
push routes end their own sessions with a WebSocket close frame (1008); a tunnel is opaque bytes
to the gateway (a close frame written mid-frame would corrupt the stream), so both of its TCP
connections are closed: the client sees the connection drop and reconnects with a fresh token,
which the handshake checks again.

One registry per gateway (``env.shared``), looked up by the proxy when a handshake succeeds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgeway.gateway.core.identity import Identity
    from edgeway.gateway.core.pipeline import GatewayEnv
    from edgeway.http.exchange import Exchange
    from edgeway.http.tunnel import Tunnel
    from edgeway.security.revocation import RevocationList

COMPONENT = "tunnel-credentials"


class TunnelCredentials:
    """The open tunnels by the token that opened them; a revoked or expired token closes them."""

    def __init__(self, env: GatewayEnv) -> None:
        self._env = env
        self._by_jti: dict[str, dict[Tunnel, Exchange]] = {}
        self._revocations: RevocationList | None = None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def hold(self, identity: Identity | None, tunnel: Tunnel, ex: Exchange) -> Callable[[], None]:
        """Watch ``tunnel`` for ``identity``'s token; call the returned function when it ends."""
        if identity is None:
            return _nothing
        revocations = self._follow()
        jti = identity.claims.get("jti")
        jti = jti if isinstance(jti, str) and jti else None
        if jti is not None and revocations is not None and jti in revocations:
            # Revoked between the auth check and the upstream's 101.
            _end(tunnel, ex, "token revoked")
            return _nothing
        timer: asyncio.TimerHandle | None = None
        exp = identity.claims.get("exp")
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            left = float(exp) - time.time()
            if left <= 0:
                _end(tunnel, ex, "token expired")
                return _nothing
            timer = asyncio.get_running_loop().call_later(left, _end, tunnel, ex, "token expired")
        if jti is not None:
            self._by_jti.setdefault(jti, {})[tunnel] = ex

        def release() -> None:
            if timer is not None:
                timer.cancel()
            if jti is not None:
                held = self._by_jti.get(jti)
                if held is not None:
                    held.pop(tunnel, None)
                    if not held:
                        del self._by_jti[jti]

        return release

    def _follow(self) -> RevocationList | None:
        # The auth filter's deny-list exists once the routes' filters are built, after the proxy
        # actions: looked up at the first tunnel, as the push routes do.
        if self._revocations is None:
            from edgeway.gateway.filters.auth.tokens import EdgeAuth

            auth = self._env.components.get("auth")
            if isinstance(auth, EdgeAuth):
                self._revocations = auth.revocations
                auth.revocations.watch(self._revoked)
        return self._revocations

    def _revoked(self, jti: str) -> None:
        for tunnel, ex in list(self._by_jti.pop(jti, {}).items()):
            _end(tunnel, ex, "token revoked")


def _end(tunnel: Tunnel, ex: Exchange, reason: str) -> None:
    ex.log["tunnel_end"] = reason
    tunnel.close()


def _nothing() -> None:
    return None
