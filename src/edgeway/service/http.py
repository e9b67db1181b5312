"""The HTTP/1.1 protocol the kit's services run under uvicorn.

uvicorn's httptools protocol appends every field llhttp reports to the request's header list,
and llhttp reports a chunked body's trailer fields through the same callback after the head: an
app that looks at a header after reading the body (FastAPI resolves ``Header()`` parameters
after it has read the body) sees a client's trailers as headers. :class:`HeadOnlyHttpTools`
drops trailer fields, as the gateway does (docs/gateway.md). Pass it as ``http=`` to
``uvicorn.run``; on the command line, ``--http h11`` (slower) ignores trailers too.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeadOnlyHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol without trailer fields in the request head."""

    _in_head = False

    def on_message_begin(self) -> None:
        self._in_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_head:
            super().on_header(name, value)
