"""The gateway's HPACK decoder for requests: ``hpack.Decoder`` with a fast path for header blocks
made only of indexed fields.

A client repeating requests (a browser's or an API client's requests to one origin) sends most of
its fields, after the first request, as one-byte references to the static or dynamic table
(RFC 7541 §6.1). ``hpack`` decodes each through several Python calls and a debug log call; this
decoder reads such a block with one table lookup per byte. Anything else — a literal, a table
size update, a multi-byte index — goes to ``hpack``'s own decoder, as does any block the fast path
finds wrong (an index past the table, a header list over the limit), so that every error is
``hpack``'s, with its type and message: the HPACK bomb defence (``max_header_list_size``) holds
on both paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from hpack import Decoder
from hpack.struct import HeaderTuple
from hpack.table import HeaderTable

__all__ = ["IndexedFastDecoder"]

# Indexed fields with a one-byte index: 0x81 (index 1) to 0xFE (index 126). 0x80 (index 0) is an
# error and 0xFF starts a multi-byte index; both take the slow path.
_ONE_BYTE_INDEXES: Final = re.compile(rb"[\x81-\xfe]*")
# Made once: a field from the static table is the same tuple in every request.
_STATIC: Final = tuple(HeaderTuple(name, value) for name, value in HeaderTable.STATIC_TABLE)
_STATIC_LENGTH: Final = len(_STATIC)
_FIELD_OVERHEAD: Final = 32  # RFC 7541 §4.1


class IndexedFastDecoder(Decoder):
    """A drop-in ``hpack.Decoder`` (``h2`` calls ``decode(data, raw=True)``)."""

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        if not raw or _ONE_BYTE_INDEXES.fullmatch(data) is None:
            return super().decode(data, raw)
        dynamic = self.header_table.dynamic_entries
        limit = self.max_header_list_size
        headers: list[HeaderTuple] = []
        size = 0
        for byte in data:
            index = byte - 0x81
            if index < _STATIC_LENGTH:
                header = _STATIC[index]
            else:
                index -= _STATIC_LENGTH
                if index >= len(dynamic):
                    return super().decode(data, raw)  # raises InvalidTableIndex
                header = HeaderTuple(*dynamic[index])
            size += _FIELD_OVERHEAD + len(header[0]) + len(header[1])
            if size > limit:
                return super().decode(data, raw)  # raises OversizedHeaderListError
            headers.append(header)
        # As hpack does after every block: a peer that did not shrink its table to a lowered
        # maximum is caught here too.
        self._assert_valid_table_size()
        return headers
