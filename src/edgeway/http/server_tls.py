"""TLS connections of a listener: what the handshake negotiated, and the hand-off to the protocol
that serves the connection.

asyncio makes a connection's protocol before the TLS handshake, but which protocol serves it is
known only after: the client and server agree on one by ALPN (``http/1.1`` today, ``h2`` once
HTTP/2 is served). So a TLS listener's connections start with a :class:`TlsHandoff`: when the
handshake is done, it reads what was negotiated into a :class:`TlsInfo`, asks the listener for
the protocol (one place decides: ``Listener.protocol_after_handshake``), and hands the transport
to it. Plaintext listeners never see any of this.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast


class TlsInfo:
    """What one connection's handshake negotiated, read once when it completed."""

    __slots__ = ("alpn", "peer", "peer_der", "ssl_object")

    def __init__(self, ssl_object: ssl.SSLObject, alpn: str | None, peer_der: bytes | None) -> None:
        self.ssl_object = ssl_object  # the rest (version, cipher, session) when someone asks
        self.alpn = alpn  # the protocol agreed by ALPN; None when the client offered none
        # The client certificate, DER, when the listener asked for one and it was verified.
        self.peer_der = peer_der
        # The layer above keeps its parsed form of the peer certificate here, once per connection.
        # ``object``, not ``Any``: the engine does not know the type, so its reader must check it.
        self.peer: object = None


class TlsHandoff(asyncio.Protocol):
    """The first protocol of a TLS connection; replaced by the real one after the handshake."""

    __slots__ = ("_choose", "_verified")

    def __init__(self, choose: Callable[[TlsInfo], asyncio.Protocol], verified: bool) -> None:
        self._choose = choose
        # Only a listener that verifies client certificates reads them: with CERT_NONE a client
        # certificate would be unverified (and is never asked for).
        self._verified = verified

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio (and uvloop) call this once the handshake has succeeded.
        ssl_object = cast(ssl.SSLObject, transport.get_extra_info("ssl_object"))
        peer = ssl_object.getpeercert(binary_form=True) if self._verified else None
        info = TlsInfo(ssl_object, ssl_object.selected_alpn_protocol(), peer)
        protocol = self._choose(info)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
