"""The HTTP/1.1 protocol the kit's services run under uvicorn.

uvicorn's httptools protocol appends every field llhttp reports to the request's header list,
and llhttp reports a chunked body's trailer fields through the same callback after the head: an
app that looks at a header after reading the body (FastAPI resolves ``Header()`` parameters
after it has read the body) sees a client's trailers as headers. :class:`HeadOnlyHttpTools`
drops trailer fields, as the gateway does (docs/gateway.md). Pass it as ``http=`` to
``uvicorn.run``; on the command line, ``--http h11`` (slower) ignores trailers too.

Over TLS it also puts the ASGI TLS extension in every request's scope
(``scope["extensions"]["tls"]``: the verified client certificate and its subject), which
uvicorn leaves out; :func:`edgeway.service.tls.peer_certificate` reads it.
"""

from __future__ import annotations

import asyncio
from typing import cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgeway.service.tls import tls_extension


class HeadOnlyHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol without trailer fields in the request head, with the TLS
    extension in the scope of a TLS connection's requests."""

    _in_head = False
    _tls: dict[object, object] | None = None  # per connection: the handshake is done once

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self._tls = cast("dict[object, object]", tls_extension(ssl_object))

    def on_message_begin(self) -> None:
        self._in_head = True
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": self._tls}

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
